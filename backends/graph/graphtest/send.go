package graphtest

import (
	"bytes"
	"encoding/base64"
	"mime"
	"net/http"
	"net/mail"
	"net/url"
	"strings"
)

// ESend is POST {mailbox}/sendMail, in Calls.
const ESend = "sendMail"

// SendMaxRequest is the largest sendMail request the fake takes; above
// it the answer is 413, as Graph's "maximum request length supported is
// 4MB" (GRAPH.md §10).
const SendMaxRequest = 4_000_000

// Sent is a message sent with sendMail in MIME mode.
type Sent struct {
	// ID is the id of its copy in Sent Items.
	ID string
	// Raw is the MIME as the client uploaded it, decoded from base64.
	Raw []byte
	// Recipients are the addresses of its To, Cc and Bcc headers, which
	// Graph sends to (there is no envelope).
	Recipients []string
	// Delivered is what every recipient gets: Raw without its Bcc
	// header. The Sent Items copy keeps the Bcc header (the sender sees
	// whom it blind-copied, as in Outlook).
	Delivered []byte
}

// SentMessages returns the messages sent so far, oldest first.
func (s *Server) SentMessages() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.sent...)
}

// sendMail serves POST /me/sendMail and /users/{user}/sendMail in MIME
// mode: Content-Type text/plain, the message in base64 (line breaks
// allowed), 202 with an empty body. JSON mode is not served. Fail the
// endpoint with FailNext{Endpoint: ESend, Status: 429} to throttle it.
func (s *Server) sendMail(w http.ResponseWriter, r *http.Request, path string, body []byte) {
	mb, rest := splitMailbox(path)
	if rest != "/sendMail" || r.Method != http.MethodPost || mb == "" {
		writeJSON(w, 405, errBody(405, "ErrorInvalidRequest"))
		return
	}
	if u, ok := strings.CutPrefix(mb, "users/"); ok {
		if u, _ = url.PathUnescape(u); !strings.EqualFold(u, s.User()) {
			writeJSON(w, 404, mailboxErr)
			return
		}
	}
	if len(body) > SendMaxRequest {
		e := errBody(413, "RequestEntityTooLarge")
		e.Error.Message = "The maximum request length supported is 4MB."
		writeJSON(w, 413, e)
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "text/plain" {
		e := errBody(400, "ErrorMimeContentInvalidBase64String")
		e.Error.Message = "Invalid base64 string for MIME content."
		writeJSON(w, 400, e)
		return
	}
	clean := strings.NewReplacer("\r", "", "\n", "").Replace(string(body))
	raw, err := base64.StdEncoding.DecodeString(clean)
	if err != nil {
		e := errBody(400, "ErrorMimeContentInvalidBase64String")
		e.Error.Message = "Invalid base64 string for MIME content."
		writeJSON(w, 400, e)
		return
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		e := errBody(400, "ErrorMimeContentInvalid")
		e.Error.Message = "The MIME content is invalid."
		writeJSON(w, 400, e)
		return
	}
	var rcpts []string
	for _, h := range []string{"To", "Cc", "Bcc"} {
		for _, v := range msg.Header[h] {
			list, err := mail.ParseAddressList(v)
			if err != nil {
				e := errBody(400, "ErrorInvalidRecipients")
				e.Error.Message = "At least one recipient is not valid."
				writeJSON(w, 400, e)
				return
			}
			for _, a := range list {
				rcpts = append(rcpts, a.Address)
			}
		}
	}
	if len(rcpts) == 0 {
		e := errBody(400, "ErrorInvalidRecipients")
		e.Error.Message = "At least one recipient is not valid., A message can't be sent because it contains no recipients."
		writeJSON(w, 400, e)
		return
	}
	id := s.Add("sentitems", raw)
	s.mu.Lock()
	s.sent = append(s.sent, Sent{ID: id, Raw: raw, Recipients: rcpts, Delivered: dropHeader(raw, "bcc")})
	s.mu.Unlock()
	w.Header().Set("request-id", "94fb3b52-0000-4000-8000-000000000000")
	w.WriteHeader(http.StatusAccepted)
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
			k, _, _ := bytes.Cut(trimmed, []byte(":"))
			dropping = strings.EqualFold(strings.TrimSpace(string(k)), name)
			if !dropping {
				out.Write(line)
			}
		}
		rest = after
	}
	return out.Bytes()
}
