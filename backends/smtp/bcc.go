package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
)

// bccFilter passes a message through without its Bcc and Resent-Bcc
// header fields (with their continuation lines): the envelope carries
// those recipients, and not every upstream drops the field itself. The
// body and every other byte pass unchanged. It reads line by line only
// in the header; a header line longer than its buffer ends the
// filtering (the rest passes as is).
type bccFilter struct {
	br       *bufio.Reader
	inHeader bool
	skipping bool
	pending  []byte
}

// readers are the filters' 64 KiB buffers, used again: allocating and
// zeroing one for each message was 7% of popbridge's CPU in relaying.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 64<<10) }}

func newBccFilter(r io.Reader) *bccFilter {
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	return &bccFilter{br: br, inHeader: true}
}

// release returns the buffer; the filter must not be read again.
func (f *bccFilter) release() {
	f.br.Reset(nil)
	readers.Put(f.br)
	f.br = nil
}

func (f *bccFilter) Read(p []byte) (int, error) {
	for len(f.pending) == 0 {
		if !f.inHeader {
			return f.br.Read(p)
		}
		line, err := f.br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			f.inHeader = false
		case err != nil && len(line) == 0:
			return 0, err
		}
		if f.inHeader && f.drop(line) {
			continue
		}
		f.pending = line
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			n := copy(p, f.pending)
			f.pending = f.pending[n:]
			if len(f.pending) == 0 {
				return n, err
			}
			return n, nil
		}
	}
	n := copy(p, f.pending)
	f.pending = f.pending[n:]
	return n, nil
}

// drop classifies a header line and reports whether to leave it out.
func (f *bccFilter) drop(line []byte) bool {
	trimmed := bytes.TrimRight(line, "\r\n")
	switch {
	case len(trimmed) == 0:
		f.inHeader = false
		return false
	case line[0] == ' ' || line[0] == '\t':
		return f.skipping
	}
	name, _, ok := bytes.Cut(trimmed, []byte(":"))
	if !ok {
		// Not a header field: the header is over (malformed message).
		f.inHeader = false
		return false
	}
	name = bytes.TrimRight(name, " \t")
	f.skipping = bytes.EqualFold(name, []byte("Bcc")) || bytes.EqualFold(name, []byte("Resent-Bcc"))
	return f.skipping
}
