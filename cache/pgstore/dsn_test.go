package pgstore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadDSN(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "dsn")
	if err := os.WriteFile(file, []byte("  postgres://u:secret@db/pop\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if d, err := LoadDSN("", file, ""); err != nil || d != "postgres://u:secret@db/pop" {
		t.Errorf("from file: %q, %v", d, err)
	}
	t.Setenv("MY_DSN", "postgres://from-env/pop")
	if d, err := LoadDSN("", "", "MY_DSN"); err != nil || d != "postgres://from-env/pop" {
		t.Errorf("from env: %q, %v", d, err)
	}
	if d, err := LoadDSN("postgres://inline/x", file, "MY_DSN"); err != nil || d != "postgres://inline/x" {
		t.Errorf("inline: %q, %v", d, err)
	}
	t.Setenv(DSNEnv, "postgres://default-env/pop")
	if d, err := LoadDSN("", "", ""); err != nil || d != "postgres://default-env/pop" {
		t.Errorf("from %s: %q, %v", DSNEnv, d, err)
	}
	t.Setenv(DSNEnv, "")
	if _, err := LoadDSN("", "", ""); err == nil || !strings.Contains(err.Error(), DSNEnv) || !strings.Contains(err.Error(), "file") {
		t.Errorf("nothing given: %v, want an error naming both ways", err)
	}
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := DSNFromFile(file)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") || strings.Contains(err.Error(), "secret") {
		t.Errorf("world-readable file: %v, want a chmod hint without the password", err)
	}
	if _, err := DSNFromFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file was accepted")
	}
}

func TestOpenErrorsHidePassword(t *testing.T) {
	_, err := Open(t.Context(), "postgres://u:hunter2@[bad/x", nil)
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("bad DSN: %v, want an error without the password", err)
	}
	// Nothing listens on port 1: a temporary error, password left out.
	_, err = Open(t.Context(), "postgres://u:hunter2@127.0.0.1:1/x?connect_timeout=2", nil)
	if !IsTemporary(err) || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("unreachable server: %v, want a temporary error without the password", err)
	}
}
