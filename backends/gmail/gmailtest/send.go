package gmailtest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/mail"
	"strings"
)

// MSend is users.messages.send, in Calls.
const MSend = "messages.send"

// SendMaxSize is messages.send's maxSize (35 MiB).
const SendMaxSize = 36700160

func init() { Cost[MSend] = 100 }

// Sent is a message sent with messages.send.
type Sent struct {
	ID string
	// Raw is the message as the client uploaded it.
	Raw []byte
	// Recipients are the addresses of its To, Cc and Bcc headers, which
	// Gmail sends to (there is no envelope).
	Recipients []string
	// Delivered is what every recipient gets and the SENT copy holds:
	// Raw without its Bcc header.
	Delivered []byte
}

// sendRoutes serves messages.send: the metadata form (JSON {"raw":
// base64url}) and the media upload (uploadType=multipart, whose second
// part is the message, or uploadType=media). Resumable uploads are not
// served: clients must use googleapi.ChunkSize(0).
func (s *Server) sendRoutes() {
	s.route("POST "+base+"/messages/send", MSend, s.send)
	s.route("POST /upload"+base+"/messages/send", MSend, s.send)
}

// SentMessages returns the messages sent so far, oldest first.
func (s *Server) SentMessages() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.sent...)
}

func (s *Server) send(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, SendMaxSize+1<<20))
	if err != nil {
		badRequest(w, "reading the request: "+err.Error())
		return
	}
	raw, ok := uploaded(w, r, body)
	if !ok {
		return
	}
	if len(raw) > SendMaxSize {
		writeError(w, 413, "uploadTooLarge", "Request payload size exceeds the limit")
		return
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		badRequest(w, "Invalid RFC 822 message")
		return
	}
	var rcpts []string
	for _, h := range []string{"To", "Cc", "Bcc"} {
		if v := msg.Header.Get(h); v != "" {
			list, err := mail.ParseAddressList(v)
			if err != nil {
				badRequest(w, "Invalid "+h+" header")
				return
			}
			for _, a := range list {
				rcpts = append(rcpts, a.Address)
			}
		}
	}
	if len(rcpts) == 0 {
		badRequest(w, "Recipient address required")
		return
	}
	delivered := dropHeader(raw, "bcc")
	s.mu.Lock()
	id := s.addLocked(delivered, s.clock, []string{"SENT"})
	s.sent = append(s.sent, Sent{ID: id, Raw: raw, Recipients: rcpts, Delivered: delivered})
	s.mu.Unlock()
	writeJSON(w, 200, map[string]any{"id": id, "threadId": id, "labelIds": []string{"SENT"}})
}

// uploaded returns the message of a messages.send request, or answers
// 400.
func uploaded(w http.ResponseWriter, r *http.Request, body []byte) ([]byte, bool) {
	if !strings.HasPrefix(r.URL.Path, "/upload/") {
		var m struct{ Raw string }
		if err := json.Unmarshal(body, &m); err != nil || m.Raw == "" {
			badRequest(w, "'raw' RFC822 payload message string or uploading message via /upload/* URL required")
			return nil, false
		}
		raw, err := base64.URLEncoding.DecodeString(m.Raw)
		if err != nil {
			if raw, err = base64.RawURLEncoding.DecodeString(m.Raw); err != nil {
				badRequest(w, "Invalid value for ByteString")
				return nil, false
			}
		}
		return raw, true
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case err != nil:
		badRequest(w, "bad Content-Type")
		return nil, false
	case r.URL.Query().Get("uploadType") == "media" || mt == "message/rfc822":
		return body, true
	case mt != "multipart/related":
		badRequest(w, "Media type '"+mt+"' is not supported")
		return nil, false
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	if _, err := mr.NextPart(); err != nil { // the metadata
		badRequest(w, "multipart: no metadata part")
		return nil, false
	}
	p, err := mr.NextPart()
	if err != nil {
		badRequest(w, "multipart: no media part")
		return nil, false
	}
	raw, err := io.ReadAll(p)
	if err != nil {
		badRequest(w, "multipart: "+err.Error())
		return nil, false
	}
	return raw, true
}

// dropHeader returns msg without the header fields named name (and
// their continuation lines), in its header only.
func dropHeader(msg []byte, name string) []byte {
	var out bytes.Buffer
	rest, dropping := msg, false
	for len(rest) > 0 {
		line, after, found := bytes.Cut(rest, []byte("\n"))
		if found {
			line = rest[:len(line)+1]
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 { // end of the header
			out.Write(rest)
			return out.Bytes()
		}
		if trimmed[0] == ' ' || trimmed[0] == '\t' {
			if !dropping {
				out.Write(line)
			}
		} else {
			field, _, _ := bytes.Cut(trimmed, []byte(":"))
			dropping = strings.EqualFold(strings.TrimSpace(string(field)), name)
			if !dropping {
				out.Write(line)
			}
		}
		rest = after
	}
	return out.Bytes()
}
