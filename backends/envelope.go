package backends

import (
	"bufio"
	"bytes"
	"io"
	"net/mail"
	"slices"
	"strings"

	gosmtp "github.com/emersion/go-smtp"
)

// maxHeaderBytes bounds the header EnvelopeBcc reads.
const maxHeaderBytes = 1 << 20

// EnvelopeBcc reconciles a message with its SMTP envelope, for an API
// that takes the recipients from the message's header (Gmail's
// messages.send, Graph's sendMail). It reads the header from msg and
// returns the envelope recipients (rcpts) that the To, Cc and Bcc fields
// do not name, to be added in a Bcc field so that they receive it. A
// recipient the header names but the envelope lacks gives a 554: the API
// would send to it, and popbridge never widens the recipients. An
// unreadable header gives a 554 too.
func EnvelopeBcc(msg io.Reader, rcpts []string) ([]string, error) {
	header, err := readHeader(msg)
	if err != nil {
		return nil, &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 6, 0}, Message: "Message header unreadable"}
	}
	named, err := headerRecipients(header)
	if err != nil {
		return nil, &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 6, 0}, Message: "Recipient header unreadable"}
	}
	for _, a := range named {
		if !containsFold(rcpts, a) {
			return nil, &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 6, 0}, Message: "A recipient in the To, Cc or Bcc header is not in the envelope (RCPT TO)"}
		}
	}
	var bcc []string
	for _, rc := range rcpts {
		if !containsFold(named, rc) {
			bcc = append(bcc, rc)
		}
	}
	return bcc, nil
}

// containsFold reports whether list holds s, ignoring case.
func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(a string) bool { return strings.EqualFold(a, s) })
}

// readHeader reads the header section of the message from r, up to and
// excluding the empty line.
func readHeader(r io.Reader) ([]byte, error) {
	br := bufio.NewReader(io.LimitReader(r, maxHeaderBytes))
	var h bytes.Buffer
	for {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimRight(line, "\r\n")) == 0 && (err == nil || len(line) > 0) {
			return h.Bytes(), nil
		}
		h.Write(line)
		if err == io.EOF {
			return h.Bytes(), nil // a message that is only a header
		}
		if err != nil {
			return nil, err
		}
	}
}

// headerRecipients returns the addresses of the To, Cc and Bcc fields.
func headerRecipients(header []byte) ([]string, error) {
	m, err := mail.ReadMessage(io.MultiReader(bytes.NewReader(header), strings.NewReader("\r\n")))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, k := range []string{"To", "Cc", "Bcc"} {
		for _, v := range m.Header[k] {
			if strings.TrimSpace(v) == "" {
				continue
			}
			list, err := mail.ParseAddressList(v)
			if err != nil {
				return nil, err
			}
			for _, a := range list {
				out = append(out, a.Address)
			}
		}
	}
	return out, nil
}
