package submission

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// At log level trace, a session logs the commands it handles (dir
// "in") and its replies (dir "out") as
// {"dir":...,"line":...,"client":...,"message":"smtp"}. go-smtp hands
// the session parsed commands, so the lines are rebuilt from them; EHLO,
// STARTTLS, NOOP and QUIT, which go-smtp answers itself, are not
// logged. AUTH responses are replaced by <redacted>; the message is
// logged only as its size.

const redacted = "<redacted>"

func (ses *session) trace(dir, line string) {
	if ses.traced {
		ses.s.log.Trace().Str("dir", dir).Str("client", ses.ip.String()).Str("line", line).Msg("smtp")
	}
}

// traceReply logs the reply that err (nil: success with ok) gives.
func (ses *session) traceReply(err error, ok string) {
	if !ses.traced {
		return
	}
	var se *smtp.SMTPError
	switch {
	case err == nil:
		ses.trace("out", ok)
	case errors.As(err, &se):
		ses.trace("out", fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message))
	default:
		// go-smtp words the reply; its text is not repeated here.
		ses.trace("out", "(error reply)")
	}
}

// tracedSASL traces the responses of an AUTH exchange as <redacted>.
type tracedSASL struct {
	sasl.Server
	ses *session
}

func (t tracedSASL) Next(response []byte) ([]byte, bool, error) {
	if response != nil {
		t.ses.trace("in", redacted)
	}
	challenge, done, err := t.Server.Next(response)
	switch {
	case err != nil:
		t.ses.traceReply(err, "")
	case done:
		t.ses.trace("out", "235 2.0.0 Authentication succeeded")
	default:
		t.ses.trace("out", "334 "+strconv.Itoa(len(challenge))+" octets")
	}
	return challenge, done, err
}
