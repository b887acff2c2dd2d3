package gmail

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"google.golang.org/api/googleapi"

	"github.com/popbridge/popbridge/proxy"
)

// openRaw streams the message of messages.get format=raw as the reply
// arrives: only the "raw" field is decoded, so a message is never held
// whole in memory. (The generated client reads the whole JSON reply, then
// holds the base64 text as a string.) The request passes the gate like
// any other; the reply then belongs to the returned stream, which fails
// when a Read waits CallTimeout for the reply, or ctx ends.
func (b *Backend) openRaw(ctx context.Context, id string) (io.ReadCloser, error) {
	u := googleapi.ResolveRelative(b.svc.BasePath,
		"gmail/v1/users/"+url.PathEscape(b.opts.UserID)+"/messages/"+url.PathEscape(id)) +
		"?alt=json&fields=raw&format=raw&prettyPrint=false"
	outer := ctx // call may bound ctx for its retries; the stream outlives call
	var rc io.ReadCloser
	err := b.call(ctx, "messages.get", 5, func(actx context.Context) error {
		sctx, cancel := context.WithCancel(outer)
		// Until the reply's header arrives, the attempt's deadline holds.
		stop := context.AfterFunc(actx, cancel)
		req, err := http.NewRequestWithContext(sctx, http.MethodGet, u, nil)
		if err != nil {
			cancel()
			return err
		}
		resp, err := b.hc.Do(req)
		if !stop() {
			err = errors.Join(err, actx.Err())
		}
		if err != nil {
			if resp != nil {
				resp.Body.Close()
			}
			cancel()
			return err
		}
		if err := googleapi.CheckResponse(resp); err != nil {
			resp.Body.Close()
			cancel()
			return err
		}
		rc = newRawReader(resp.Body, cancel, b.opts.CallTimeout)
		return nil
	})
	if notFound(err) {
		return nil, fmt.Errorf("gmail: message %s: %w", id, proxy.ErrNoMessage)
	}
	return rc, err
}

// rawReader decodes the "raw" field of a JSON reply as it is read.
type rawReader struct {
	body   io.ReadCloser
	cancel context.CancelFunc
	idle   *time.Timer // runs during Read: cancels the request when the reply stalls
	wait   time.Duration
	dec    io.Reader // base64 decoder over text
	text   rawText
	once   sync.Once
}

func newRawReader(body io.ReadCloser, cancel context.CancelFunc, idle time.Duration) *rawReader {
	r := &rawReader{body: body, cancel: cancel, wait: idle}
	r.text.r = bufio.NewReaderSize(body, 32<<10)
	r.dec = base64.NewDecoder(base64.RawURLEncoding, &r.text)
	r.idle = time.AfterFunc(idle, cancel)
	r.idle.Stop()
	return r
}

// Read decodes the next part of the message. Only the time spent
// waiting in Read counts against the stall limit: a POP3 client slow to
// take the message is the proxy's to time out.
func (r *rawReader) Read(p []byte) (int, error) {
	r.idle.Reset(r.wait)
	n, err := r.dec.Read(p)
	r.idle.Stop()
	if err != nil && err != io.EOF {
		err = fmt.Errorf("gmail: raw message: %w", err)
	}
	return n, err
}

func (r *rawReader) Close() error {
	r.once.Do(func() {
		r.idle.Stop()
		r.body.Close()
		r.cancel()
	})
	return nil
}

// rawText yields the characters of the JSON string value of the
// top-level key "raw" mapped by rawChars, after undoing JSON escapes
// (\/, \u003d).
type rawText struct {
	r     *bufio.Reader
	state int // 0 looking for the key, 1 in the value, 2 done
}

var errNoRaw = errors.New(`reply ended before a "raw" field`)

func (t *rawText) Read(p []byte) (int, error) {
	if t.state == 0 {
		found, err := t.findValue()
		if err != nil {
			return 0, err
		}
		if !found {
			// The reply left "raw" out: an empty message (proto JSON
			// omits empty strings).
			t.state = 2
			return 0, io.EOF
		}
		t.state = 1
	}
	n := 0
	for n < len(p) && t.state == 1 {
		// Work on what the buffer holds, one call per chunk.
		if t.r.Buffered() == 0 {
			if _, err := t.r.Peek(1); err != nil {
				return n, unexpected(err)
			}
		}
		buf, _ := t.r.Peek(t.r.Buffered())
		i := 0
		for ; i < len(buf) && n < len(p); i++ {
			c := buf[i]
			if c == '"' {
				t.state = 2
				i++
				break
			}
			if c == '\\' {
				break
			}
			if p[n] = rawChars[c]; p[n] != 0 {
				n++
			}
		}
		t.r.Discard(i)
		if i < len(buf) && buf[i] == '\\' && t.state == 1 && n < len(p) {
			t.r.ReadByte()
			c, err := t.escape()
			if err != nil {
				return n, err
			}
			if p[n] = rawChars[c]; p[n] != 0 {
				n++
			}
		}
	}
	if t.state == 2 && n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// escape reads a JSON escape after the backslash and returns its
// character, which must be ASCII.
func (t *rawText) escape() (byte, error) {
	c, err := t.r.ReadByte()
	if err != nil {
		return 0, unexpected(err)
	}
	switch c {
	case '/', '\\', '"':
		return c, nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 'u':
		var h [4]byte
		if _, err := io.ReadFull(t.r, h[:]); err != nil {
			return 0, unexpected(err)
		}
		v, err := strconv.ParseUint(string(h[:]), 16, 16)
		if err != nil || v > 0x7f {
			return 0, fmt.Errorf("unexpected escape \\u%s in raw", h[:])
		}
		return byte(v), nil
	}
	return 0, fmt.Errorf("unexpected escape \\%c in raw", c)
}

// findValue reads the JSON up to the opening quote of the value of the
// top-level key "raw", skipping other members; found is false when the
// object ends without it.
func (t *rawText) findValue() (found bool, err error) {
	depth := 0
	afterKey := false // the last token was the string "raw" at depth 1
	for {
		c, err := t.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				return false, errNoRaw
			}
			return false, err
		}
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				return false, nil
			}
		case ':':
			if afterKey {
				return true, t.openQuote()
			}
		case '"':
			s, err := t.skipString()
			if err != nil {
				return false, err
			}
			afterKey = depth == 1 && s
			continue
		}
		afterKey = false
	}
}

// skipString reads a JSON string after its opening quote and reports
// whether it was "raw".
func (t *rawText) skipString() (bool, error) {
	var head [4]byte
	n := 0
	for {
		c, err := t.r.ReadByte()
		if err != nil {
			return false, unexpected(err)
		}
		switch c {
		case '"':
			return n == 3 && string(head[:3]) == "raw", nil
		case '\\':
			if _, err := t.r.ReadByte(); err != nil {
				return false, unexpected(err)
			}
			n = 4 // an escaped key is not "raw" as Google writes it
		default:
			if n < 4 {
				head[n] = c
			}
			n++
		}
	}
}

// openQuote reads up to the quote that opens the value.
func (t *rawText) openQuote() error {
	for {
		c, err := t.r.ReadByte()
		if err != nil {
			return unexpected(err)
		}
		switch c {
		case ' ', '\t', '\r', '\n':
		case '"':
			return nil
		default:
			return fmt.Errorf(`"raw" is not a string`)
		}
	}
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
