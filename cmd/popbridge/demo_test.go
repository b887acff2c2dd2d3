package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/app"
	"github.com/popbridge/popbridge/internal/control"
)

func TestDemo(t *testing.T) {
	dir := t.TempDir()
	stdout, stderr, stop := startRun(t, "demo", "-dir", dir, "-listen", "127.0.0.1:0")
	curlRE := regexp.MustCompile(`(?m)^  curl pop3://demo:demo@(127\.0\.0\.1:\d+)/1$`)
	addr := waitFor(t, "the curl command", func() string {
		if m := curlRE.FindStringSubmatch(stdout.String()); m != nil {
			return m[1]
		}
		return ""
	})
	mdir := filepath.Join(dir, "Maildir")
	if !strings.Contains(stdout.String(), "serving "+mdir+" (created, 5 message(s))") {
		t.Errorf("intro:\n%s", stdout)
	}

	files, err := filepath.Glob(filepath.Join(mdir, "new", "*"))
	if err != nil || len(files) != 5 {
		t.Fatalf("demo Maildir holds %d messages (%v), want 5", len(files), err)
	}
	p := dialPOP3(t, addr)
	p.cmd("USER demo")
	if s := p.cmd("PASS demo"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("PASS demo: %q", s)
	}
	uidl1 := p.multi("UIDL")
	for i, f := range files {
		want := string(must(os.ReadFile(f)))
		if got := p.multi("RETR %d", i+1); got != want {
			t.Errorf("RETR %d:\n%s\nwant %s:\n%s", i+1, got, f, want)
		}
	}
	if s := p.cmd("QUIT"); !strings.HasPrefix(s, "+OK") {
		t.Errorf("QUIT: %q", s)
	}
	if code := stop(); code != 0 {
		t.Fatalf("demo exited %d; stderr:\n%s", code, stderr)
	}
	// The demo's state lives in its directory; the socket is gone.
	if _, err := os.Stat(filepath.Join(dir, app.StoreFile)); err != nil {
		t.Errorf("demo store: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, control.File)); !os.IsNotExist(err) {
		t.Errorf("demo control socket left after stop: %v", err)
	}

	// A second run reuses the Maildir: same files, same UIDLs.
	stdout, stderr, stop = startRun(t, "demo", "-dir", dir, "-listen", "127.0.0.1:0")
	addr = waitFor(t, "the curl command", func() string {
		if m := curlRE.FindStringSubmatch(stdout.String()); m != nil {
			return m[1]
		}
		return ""
	})
	if !strings.Contains(stdout.String(), "(reusing, 5 message(s))") {
		t.Errorf("second run intro:\n%s", stdout)
	}
	if again, _ := filepath.Glob(filepath.Join(mdir, "new", "*")); !slices.Equal(again, files) {
		t.Errorf("second run changed the Maildir: %q, was %q", again, files)
	}
	p = dialPOP3(t, addr)
	p.cmd("USER demo")
	p.cmd("PASS demo")
	if uidl2 := p.multi("UIDL"); uidl2 != uidl1 {
		t.Errorf("UIDL changed between runs:\n%s\nwas\n%s", uidl2, uidl1)
	}
	p.cmd("QUIT")
	if code := stop(); code != 0 {
		t.Errorf("second demo exited %d; stderr:\n%s", code, stderr)
	}
}

func TestDemoAddressInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := runCmd(t, "", "demo", "-dir", t.TempDir(), "-listen", l.Addr().String())
	if r.code != 1 || !strings.Contains(r.stderr, "is another popbridge running? choose another address with -listen") {
		t.Errorf("demo on a busy port: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestEnsureDemoMaildir(t *testing.T) {
	dir := t.TempDir()
	mdir := filepath.Join(dir, "sub", "Maildir")
	created, err := ensureDemoMaildir(mdir, time.Now())
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
	if n := countMessages(mdir); n != 5 {
		t.Errorf("%d messages, want 5", n)
	}
	created, err = ensureDemoMaildir(mdir, time.Now())
	if err != nil || created {
		t.Errorf("second call: created %v, %v; want reuse", created, err)
	}

	notMaildir := filepath.Join(dir, "plain")
	if err := os.Mkdir(notMaildir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := ensureDemoMaildir(notMaildir, time.Now()); err == nil || !strings.Contains(err.Error(), "is not a Maildir") {
		t.Errorf("existing non-Maildir: %v", err)
	}
}

func TestDemoMessages(t *testing.T) {
	now := time.Date(2025, 3, 4, 12, 0, 0, 0, time.UTC)
	msgs := demoMessages(now)
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

func TestURLHost(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1110}, "127.0.0.1:1110"},
		{&net.TCPAddr{IP: net.IPv4zero, Port: 1110}, "127.0.0.1:1110"},
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 1110}, "[::1]:1110"},
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 110}, "192.0.2.1:110"},
	}
	for _, tt := range tests {
		if got := urlHost(tt.addr); got != tt.want {
			t.Errorf("urlHost(%v) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, config.Log{Level: "warn", Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Msg("hidden")
	log.Warn().Str("k", "v").Msg("shown")
	var e map[string]any
	if err := json.Unmarshal(buf.Bytes(), &e); err != nil || e["message"] != "shown" || e["k"] != "v" || e["time"] == nil {
		t.Errorf("json log %q: %v", buf.String(), err)
	}

	buf.Reset()
	log, _ = newLogger(&buf, config.Log{}) // auto: a buffer is no terminal
	log.Info().Msg("auto")
	if !json.Valid(buf.Bytes()) {
		t.Errorf("auto format on a non-terminal is not JSON: %q", buf.String())
	}

	buf.Reset()
	log, _ = newLogger(&buf, config.Log{Format: "console", Level: "debug"})
	log.Debug().Str("k", "v").Msg("console")
	if out := buf.String(); json.Valid(buf.Bytes()) || !strings.Contains(out, "DBG console k=v") || strings.Contains(out, "\x1b[") {
		t.Errorf("console log %q: want plain text without colour", out)
	}

	if _, err := newLogger(&buf, config.Log{Level: "loud"}); err == nil {
		t.Error("unknown level: no error")
	}
	if _, err := newLogger(&buf, config.Log{Format: "xml"}); err == nil {
		t.Error("unknown format: no error")
	}
}
