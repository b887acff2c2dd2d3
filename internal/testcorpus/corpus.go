package testcorpus

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// CorpusMessage is one message written by WriteCorpus.
type CorpusMessage struct {
	// Name says which edge case the message covers, e.g. "dot-lines".
	Name string
	// Unique is the Maildir unique name (the file name before ":2,").
	Unique string
	// Path is the file written, in new/ or cur/.
	Path string
	// Data is the stored content.
	Data []byte
}

// corpusSeq keeps unique names distinct across calls in one process.
var corpusSeq atomic.Uint64

// WriteCorpus delivers the edge-case corpus into the Maildir at maildir
// (creating cur/, new/ and tmp/ as needed) and returns the messages in
// delivery order, which is also the order of their unique names. Each file
// is written in tmp/ and renamed into new/ or cur/ (some with flags), as a
// Maildir delivery does. The corpus covers lines starting with ".", a lone
// "." line, ".." lines, no final newline, 8-bit UTF-8, a 3000-octet line,
// an empty body, headers without a body separator, an empty file, CRLF
// and mixed line ends, MIME, and a 5 MB message.
func WriteCorpus(maildir string) ([]CorpusMessage, error) {
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(maildir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("testcorpus: %w", err)
		}
	}
	msgs := corpus()
	sec := time.Now().Unix()
	pid := os.Getpid()
	for i := range msgs {
		m := &msgs[i]
		q := corpusSeq.Add(1)
		// Same second, microseconds counting up: delivery order is name
		// order for Dovecot and popbridge alike.
		m.Unique = fmt.Sprintf("%d.M%06dP%dQ%d.dovecottest", sec, i, pid, q)
		var final string
		switch i % 3 {
		case 0:
			final = filepath.Join(maildir, "new", m.Unique)
		case 1:
			final = filepath.Join(maildir, "cur", m.Unique+":2,")
		default:
			final = filepath.Join(maildir, "cur", m.Unique+":2,S")
		}
		tmp := filepath.Join(maildir, "tmp", m.Unique)
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("testcorpus: %w", err)
		}
		_, err = f.Write(m.Data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp, final)
		}
		if err != nil {
			os.Remove(tmp)
			return nil, fmt.Errorf("testcorpus: %s: %w", m.Name, err)
		}
		m.Path = final
	}
	return msgs, nil
}

// header returns a plain header block (LF line ends) for message n.
func header(n int, subject string, extra ...string) string {
	h := fmt.Sprintf("Return-Path: <alice@example.org>\n"+
		"Date: Tue, 14 Nov 2023 22:%02d:20 +0000\n"+
		"From: Alice Example <alice@example.org>\n"+
		"To: Bob Example <bob@example.net>\n"+
		"Subject: %s\n"+
		"Message-ID: <corpus-%d@example.org>\n", n%60, subject, n)
	for _, e := range extra {
		h += e + "\n"
	}
	return h
}

// corpus returns the messages without names or paths.
func corpus() []CorpusMessage {
	var out []CorpusMessage
	add := func(name, data string) {
		out = append(out, CorpusMessage{Name: name, Data: []byte(data)})
	}
	n := func() int { return len(out) + 1 }

	add("plain", header(n(), "Lunch on Friday?")+"\n"+
		"Hi Bob,\n\nare we still on for lunch on Friday? The new place\non the corner opens at noon.\n\n"+
		"Cheers,\nAlice\n")

	add("dot-lines", header(n(), "Dots at the start of lines")+"\n"+
		".\n"+ // a lone dot first
		"..\n"+
		"...\n"+
		".hidden line\n"+
		"..two dots\n"+
		" .space then dot\n"+
		"middle.dot\n"+
		".\n"+ // a lone dot in the middle
		"\n"+
		".\t\n"+
		"last line\n"+
		".\n") // and last

	add("lone-dot-body", header(n(), "Only a dot")+"\n.\n")

	add("no-final-newline", header(n(), "No final newline")+"\n"+
		"The last line of this message\nhas no line end")

	add("no-final-newline-dot", header(n(), "Ends in a dot, no newline")+"\n"+
		"The last line is a lone dot without a line end:\n.")

	add("utf8-8bit", "Return-Path: <jose@example.org>\n"+
		"Date: Tue, 14 Nov 2023 22:05:20 +0000\n"+
		"From: José Müller <jose@example.org>\n"+
		"To: Zoë Ørsted <zoe@example.net>\n"+
		"Subject: Grüße aus Köln – 東京 – Привет 👋\n"+
		"Message-ID: <corpus-utf8@example.org>\n"+
		"MIME-Version: 1.0\n"+
		"Content-Type: text/plain; charset=utf-8\n"+
		"Content-Transfer-Encoding: 8bit\n"+
		"\n"+
		"Liebe Zoë,\n\nnaïve café, smørrebrød, żółć, Ελληνικά, עברית, العربية, 日本語, 한국어.\n"+
		"Bytes over 0x7F everywhere: \xc2\xa0non-breaking space, \xe2\x80\x94 dash.\n"+
		".Ünïcödé line starting with a dot\n")

	add("long-line", header(n(), "A line of 3000 octets", "X-Long-Header: "+strings.Repeat("h", 1200))+"\n"+
		"Before the long line.\n"+
		strings.Repeat("0123456789", 300)+"\n"+
		"."+strings.Repeat("d", 2999)+"\n"+ // long and dot-stuffed
		"After the long line.\n")

	add("empty-body", header(n(), "Empty body")+"\n")

	add("headers-only", header(n(), "Headers only, no blank line"))

	add("empty-file", "")

	add("crlf-stored", strings.ReplaceAll(header(n(), "Stored with CRLF")+"\n"+
		"This message is stored with CRLF line ends.\n.\n..\n.dot\nEnd.\n", "\n", "\r\n"))

	add("mixed-line-ends", strings.ReplaceAll(header(n(), "CRLF header, LF body"), "\n", "\r\n")+"\r\n"+
		"LF body line 1\nCRLF body line 2\r\nLF body line 3\n.\r\nlast\n")

	add("blank-lines", header(n(), "Blank lines for TOP")+"\n"+
		"\n\nline 3 after two blank lines\n\n\nline 6\n\n\n\n")

	add("numbered-body", header(n(), "Twenty numbered lines")+"\n"+numbered(20))

	add("mime", header(n(), "Report attached",
		"MIME-Version: 1.0",
		`Content-Type: multipart/mixed; boundary="b1"`)+"\n"+
		"This is a multi-part message in MIME format.\n"+
		"--b1\nContent-Type: text/plain; charset=us-ascii\n\nThe report is attached.\n\n"+
		"--b1\nContent-Type: application/octet-stream; name=\"r.bin\"\n"+
		"Content-Transfer-Encoding: base64\n"+
		"Content-Disposition: attachment; filename=\"r.bin\"\n\n"+
		"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\n"+
		"OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3Bx\n"+
		"--b1--\n")

	add("big-5mb", bigMessage(header(n(), "Five megabytes")+"\n", 5<<20))

	add("plain-2", header(n(), "Re: Lunch on Friday?", "In-Reply-To: <corpus-1@example.org>")+"\n"+
		"Friday works.\n\n> are we still on for lunch on Friday?\n\nBob\n")
	return out
}

func numbered(k int) string {
	var b strings.Builder
	for i := 1; i <= k; i++ {
		fmt.Fprintf(&b, "body line %d\n", i)
	}
	return b.String()
}

// bigMessage pads head with deterministic 77-octet lines (every 100th
// starts with ".") to exactly size octets.
func bigMessage(head string, size int) string {
	var b bytes.Buffer
	b.Grow(size)
	b.WriteString(head)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	line := make([]byte, 77)
	for i := 0; b.Len() < size; i++ {
		for j := range 76 {
			line[j] = alphabet[(i*7+j*13)%len(alphabet)]
		}
		if i%100 == 0 {
			line[0] = '.'
		}
		line[76] = '\n'
		if rest := size - b.Len(); rest < len(line) {
			b.Write(line[:rest-1])
			b.WriteByte('\n')
			break
		}
		b.Write(line)
	}
	return b.String()
}
