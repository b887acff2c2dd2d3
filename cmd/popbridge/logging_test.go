package main

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/admin"
)

// TestLogTimeMillis: JSON timestamps have millisecond resolution.
func TestLogTimeMillis(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, config.Log{Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Msg("x")
	var e struct{ Time string }
	if err := json.Unmarshal(buf.Bytes(), &e); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)$`).MatchString(e.Time) {
		t.Errorf("time %q, want RFC 3339 with milliseconds", e.Time)
	}
}

// TestDurationFieldNames: every logged duration says its unit in its
// field name. zerolog's Dur writes a bare number whose unit is a global
// setting, so it must not be used with a name that lacks one.
func TestDurationFieldNames(t *testing.T) {
	dur := regexp.MustCompile(`\bDur\("([^"]*)"`)
	ms := regexp.MustCompile(`\b(?:Int64|Float64|Int)\("([^"]*)", [^"]*?Milliseconds\(\)`)
	sec := regexp.MustCompile(`\b(?:Int64|Float64|Int)\("([^"]*)", [^"]*?\.Seconds\(\)`)
	n := 0
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(src), "\n") {
			for _, m := range dur.FindAllStringSubmatch(line, -1) {
				t.Errorf("%s:%d: Dur(%q): log the duration with its unit in the name, e.g. Int64(%q, d.Milliseconds())", path, i+1, m[1], m[1]+"_ms")
			}
			for _, m := range ms.FindAllStringSubmatch(line, -1) {
				n++
				if !strings.HasSuffix(m[1], "_ms") {
					t.Errorf("%s:%d: field %q holds milliseconds: name it ..._ms", path, i+1, m[1])
				}
			}
			for _, m := range sec.FindAllStringSubmatch(line, -1) {
				n++
				if !strings.HasSuffix(m[1], "_s") && !strings.HasSuffix(m[1], "_seconds") {
					t.Errorf("%s:%d: field %q holds seconds: name it ..._s", path, i+1, m[1])
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no duration field found: the scan is broken")
	}
}

// TestServeTrace: log.level trace in the configuration makes serve log
// the POP3 conversation, per session, without the password or the
// message.
func TestServeTrace(t *testing.T) {
	path := writeConfig(t, "")
	cfg := strings.Replace(string(must(os.ReadFile(path))), "level: debug", "level: trace", 1)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, stop := startRun(t, "serve", "-config", path)
	addr := listenerAddr(t, stderr, "pop3")
	p := dialPOP3(t, addr)
	p.cmd("USER alice")
	if s := p.cmd("PASS s3cret"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("PASS: %q", s)
	}
	body := p.multi("RETR 1")
	p.cmd("QUIT")
	waitFor(t, "the session to end", func() string {
		if strings.Contains(stderr.String(), `"session closed"`) {
			return "yes"
		}
		return ""
	})
	stop()
	var got []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		var e struct{ Level, Message, Session, Dir, Line string }
		if json.Unmarshal([]byte(l), &e) == nil && e.Message == "pop3" && e.Level == "trace" && e.Session != "" {
			got = append(got, e.Dir+" "+e.Line)
		}
	}
	joined := strings.Join(got, "\n")
	if !strings.Contains(joined, "in USER alice\nout +OK\nin PASS <redacted>\nout +OK Logged in.\nin RETR 1\nout +OK ") {
		t.Errorf("trace:\n%s", joined)
	}
	first := strings.SplitN(strings.TrimSpace(body), "\n", 2)[0]
	if strings.Contains(stderr.String(), "s3cret") || strings.Contains(stderr.String(), first) {
		t.Errorf("the log holds the password or the message (%q):\n%s", first, stderr)
	}
}

// TestLoggerFeedsAdminRing: with a console log, the admin page's ring
// still gets every line (as JSON) and keeps it per account.
func TestLoggerFeedsAdminRing(t *testing.T) {
	var buf bytes.Buffer
	ring := new(admin.LogRing)
	log, err := newLogger(&buf, config.Log{Format: "console"}, ring)
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Str("user", "alice").Msg("login")
	log.Info().Msg("no account")
	if !strings.Contains(buf.String(), "login") || strings.HasPrefix(buf.String(), "{") {
		t.Errorf("console output %q", buf.String())
	}
	if got := ring.Lines("alice"); len(got) != 1 || !strings.Contains(got[0], "INFO login") {
		t.Errorf("ring lines of alice: %q", got)
	}
}
