package demomail

import (
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEnsure(t *testing.T) {
	dir := t.TempDir()
	mdir := filepath.Join(dir, "sub", "Maildir")
	created, err := Ensure(mdir, time.Now())
	if err != nil || !created {
		t.Fatalf("first call: created %v, %v", created, err)
	}
	for _, sub := range []string{"cur", "new", "tmp"} {
		if fi, err := os.Stat(filepath.Join(mdir, sub)); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, %v", sub, fi, err)
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, "sub", ".Maildir-*")); len(leftovers) != 0 {
		t.Errorf("temporary directories left behind: %q", leftovers)
	}
	if n := Count(mdir); n != 5 {
		t.Errorf("%d messages, want 5", n)
	}
	created, err = Ensure(mdir, time.Now())
	if err != nil || created {
		t.Errorf("second call: created %v, %v; want reuse", created, err)
	}

	notMaildir := filepath.Join(dir, "plain")
	if err := os.Mkdir(notMaildir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(notMaildir, time.Now()); err == nil || !strings.Contains(err.Error(), "is not a Maildir") {
		t.Errorf("existing non-Maildir: %v", err)
	}
}

func TestMessages(t *testing.T) {
	now := time.Date(2025, 3, 4, 12, 0, 0, 0, time.UTC)
	msgs := Messages(now)
	dec := new(mime.WordDecoder)
	wantSubjects := []string{
		"Welcome to popbridge",
		"Your weekly digest: 3 stories",
		"March figures",
		"Grüße aus Zürich ☕",
		"Where did my dotfiles go?",
	}
	if len(msgs) != len(wantSubjects) {
		t.Fatalf("%d messages, want %d", len(msgs), len(wantSubjects))
	}
	var prev time.Time
	for i, raw := range msgs {
		if strings.Contains(raw, "\r") {
			t.Errorf("message %d has CR; Maildir stores LF line ends", i+1)
		}
		for n, line := range strings.Split(raw, "\n") {
			if len(line) > 78 && !strings.HasPrefix(line, "<li>") {
				t.Errorf("message %d line %d is %d octets long", i+1, n+1, len(line))
			}
		}
		m, err := mail.ReadMessage(strings.NewReader(raw))
		if err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
		subject, err := dec.DecodeHeader(m.Header.Get("Subject"))
		if err != nil || subject != wantSubjects[i] {
			t.Errorf("message %d subject %q, %v; want %q", i+1, subject, err, wantSubjects[i])
		}
		date, err := m.Header.Date()
		if err != nil || !date.After(prev) || date.After(now) {
			t.Errorf("message %d date %v, %v: want increasing dates before now", i+1, date, err)
		}
		prev = date
		if _, err := m.Header.AddressList("From"); err != nil {
			t.Errorf("message %d From: %v", i+1, err)
		}
		for _, h := range []string{"To", "Message-ID", "MIME-Version", "Content-Type"} {
			if m.Header.Get(h) == "" {
				t.Errorf("message %d has no %s", i+1, h)
			}
		}
	}

	// The newsletter: text and HTML alternatives.
	parts := mimeParts(t, msgs[1])
	if len(parts) != 2 || !strings.HasPrefix(parts[0].ctype, "text/plain") || !strings.HasPrefix(parts[1].ctype, "text/html") {
		t.Errorf("newsletter parts: %+v", parts)
	}
	// The attachment decodes to the CSV.
	parts = mimeParts(t, msgs[2])
	if len(parts) != 2 || parts[1].filename != "march.csv" {
		t.Fatalf("attachment parts: %+v", parts)
	}
	csv, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(parts[1].body, "\n", ""))
	if err != nil || !bytes.HasPrefix(csv, []byte("date,messages,bytes\n")) {
		t.Errorf("attachment: %q, %v", csv, err)
	}
	// 8-bit UTF-8 body.
	if !strings.Contains(msgs[3], "Content-Transfer-Encoding: 8bit") || !strings.Contains(msgs[3], "日本語") {
		t.Error("UTF-8 message lacks its 8-bit body")
	}
	// Lines that dot-stuffing must protect.
	lines := strings.Split(msgs[4], "\n")
	for _, want := range []string{".", "..", ".profile", "...and nothing else."} {
		if !slices.Contains(lines, want) {
			t.Errorf("dot message lacks the line %q", want)
		}
	}
}

type part struct{ ctype, filename, body string }

// mimeParts splits a multipart message into its parts.
func mimeParts(t *testing.T, raw string) []part {
	t.Helper()
	m, err := mail.ReadMessage(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || params["boundary"] == "" {
		t.Fatalf("Content-Type %q: %v", m.Header.Get("Content-Type"), err)
	}
	r := multipart.NewReader(m.Body, params["boundary"])
	var out []part
	for {
		p, err := r.NextPart()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(p)
		out = append(out, part{p.Header.Get("Content-Type"), p.FileName(), string(body)})
	}
}
