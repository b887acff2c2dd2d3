package app

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/popbridge/popbridge/config"
)

// TestBuild builds a server with listen.http from a configuration file,
// serves a login at the address Addr reports, reloads a changed password,
// and stops; the state directory is free again after Close.
func TestBuild(t *testing.T) {
	path := writeConfig(t, "")
	src := strings.Replace(string(must(os.ReadFile(path))), "  pop3: 127.0.0.1:0\n", "  pop3: 127.0.0.1:0\n  http: localhost:0\n", 1)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := must(config.Load(path))
	logs := &syncBuffer{}
	log := zerolog.New(logs)
	a, err := Build(cfg, &log, Options{ConfigPath: path})
	if err != nil {
		t.Fatal(err)
	}
	if a.Addr("pop3") == nil || a.Addr("http") == nil || a.Addr("pop3s") != nil {
		t.Fatalf("Addr: pop3 %v, http %v, pop3s %v", a.Addr("pop3"), a.Addr("http"), a.Addr("pop3s"))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()

	login := func(pass string) string {
		p := dialPOP3(t, a.Addr("pop3").String())
		p.c.PrintfLine("USER alice")
		p.line()
		p.c.PrintfLine("PASS %s", pass)
		s := p.line()
		p.c.PrintfLine("QUIT")
		return s
	}
	if s := login("s3cret"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("login: %q", s)
	}
	if code, _ := httpGet(t, "http://"+a.Addr("http").String()+"/readyz", ""); code != 200 {
		t.Errorf("/readyz: %d", code)
	}

	hash := string(must(bcrypt.GenerateFromPassword([]byte("n3w"), bcrypt.MinCost)))
	src = strings.Replace(src, cfg.Accounts[0].PasswordHash, hash, 1)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if s := login("n3w"); !strings.HasPrefix(s, "+OK") {
		t.Errorf("login with the reloaded password: %q", s)
	}
	if ev := eventsWith(logs.String(), "configuration reloaded"); len(ev) != 1 {
		t.Errorf("reload events: %v", ev)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	a.Close()
	b, err := Build(cfg, &log, Options{ConfigPath: path})
	if err != nil {
		t.Fatalf("Build after Close: %v", err)
	}
	b.Close()
}

// TestBuildFails: a listener that cannot be bound fails Build, which
// releases what it took (the store, listen.http).
func TestBuildFails(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	path := writeConfig(t, "")
	cfg := must(config.Load(path))
	cfg.Listen.POP3S = busy.Addr().String()
	log := zerolog.Nop()
	if _, err := Build(cfg, &log, Options{ConfigPath: path}); err == nil || !strings.HasPrefix(err.Error(), "listen.pop3s: ") {
		t.Fatalf("Build on a busy address: %v", err)
	}
	cfg.Listen.POP3S = ""
	a, err := Build(cfg, &log, Options{ConfigPath: path})
	if err != nil {
		t.Fatalf("Build after a failed one: %v", err)
	}
	a.Close()
}
