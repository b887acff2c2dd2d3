package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

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
