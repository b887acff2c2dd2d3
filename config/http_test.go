package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestListenHTTP(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "status.token"), []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("STATUS_TOKEN", "from-env")
	withListen := func(listen, extra string) string {
		return strings.Replace(minimal, "  pop3: 127.0.0.1:1110\n", "  pop3: 127.0.0.1:1110\n"+listen, 1) + extra
	}
	tests := []struct {
		name  string
		src   string
		token string
		want  []string
	}{
		{"off", minimal, "", nil},
		{"on, open status", withListen("  http: 127.0.0.1:9110\n", ""), "", nil},
		{"token from env", withListen("  http: 127.0.0.1:9110\n", "http:\n  status_token: ${STATUS_TOKEN}\n"), "from-env", nil},
		{"token from file", withListen("  http: 127.0.0.1:9110\n", "http:\n  status_token_file: status.token\n"), "from-file", nil},
		{"bad address", withListen("  http: localhost\n", ""), "", []string{
			`listen.http: invalid address "localhost" (want host:port, e.g. 127.0.0.1:1110)`,
		}},
		{"same as pop3", withListen("  http: 127.0.0.1:1110\n", ""), "", []string{
			"listen.http: same address as a POP3 listener",
		}},
		{"token without listener", minimal + "http:\n  status_token: x\n", "", []string{
			"http.status_token: set, but listen.http is not",
		}},
		{"both token keys", withListen("  http: 127.0.0.1:9110\n", "http:\n  status_token: x\n  status_token_file: status.token\n"), "", []string{
			"http.status_token: set either status_token or status_token_file, not both",
		}},
		{"unset env", withListen("  http: 127.0.0.1:9110\n", "http:\n  status_token: ${NO_SUCH_STATUS_TOKEN}\n"), "", []string{
			"http.status_token: environment variable NO_SUCH_STATUS_TOKEN is not set",
		}},
		{"unknown key", withListen("  http: 127.0.0.1:9110\n", "http:\n  token: x\n"), "", []string{
			`http: unknown key "token"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse("cfg.yaml", []byte(strings.ReplaceAll(tt.src, "HASH", testHash)), dir)
			if got := errLines(err); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("problems:\n got %q\nwant %q", got, tt.want)
			}
			if err == nil && c.HTTP.StatusToken != tt.token {
				t.Errorf("status token %q, want %q", c.HTTP.StatusToken, tt.token)
			}
		})
	}
}
