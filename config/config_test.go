package config

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/popbridge/popbridge/internal/testcert"
)

// testHash is a bcrypt hash of "secret" at the lowest cost, to keep the
// tests fast.
var testHash = func() string {
	h, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	return string(h)
}()

// minimal is the smallest valid configuration.
const minimal = `
listen:
  pop3: 127.0.0.1:1110
accounts:
  - user: alice
    password_hash: "HASH"
    backend:
      type: maildir
      path: mail/alice
`

// parseString parses src (with HASH replaced by testHash) as if it were
// the file /etc/popbridge/cfg.yaml.
func parseString(t *testing.T, src string) (*Config, error) {
	t.Helper()
	return parse("cfg.yaml", []byte(strings.ReplaceAll(src, "HASH", testHash)), "/etc/popbridge")
}

// errLines splits a joined error into its lines, without the
// "cfg.yaml:LINE: " of each: the tests using it are about what the
// problems are, TestProblemLines about where they are.
func errLines(err error) []string {
	if err == nil {
		return nil
	}
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = locationRE.ReplaceAllString(l, "")
	}
	return lines
}

var locationRE = regexp.MustCompile(`^cfg\.yaml(:\d+)?: `)

func TestLoadFull(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bob.hash"), []byte(testHash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ALICE_HASH", testHash)
	src := `
listen:
  pop3: 127.0.0.1:1110
  pop3s: "[::1]:1995"
tls:
  cert_file: tls/cert.pem
  key_file: /etc/ssl/key.pem
cleartext_auth: [10.0.0.0/8, 192.0.2.7]
state_dir: ./state
cache: {body_bytes: 32MiB, max_message_bytes: 512KiB}
log: {level: debug, format: json}
limits:
  max_connections: 200
  max_connections_per_ip: 5
  idle_timeout: 15m
  auth_idle_timeout: 30s
  write_timeout: 1m
  backend_timeout: 45s
  auth_failure_delay: 1s
  max_auth_failure_delay: 8s
  trusted_networks: [10.1.0.0/16]
accounts:
  - user: alice
    password_hash: ${ALICE_HASH}
    backend:
      type: maildir
      path: mail/alice
      on_delete: keep
  - user: bob@example.org
    password_hash_file: bob.hash
    backend:
      type: maildir
      path: /srv/mail/bob
      on_delete: remove
`
	path := filepath.Join(dir, "popbridge.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := &Config{
		Listen:        Listen{POP3: "127.0.0.1:1110", POP3S: "[::1]:1995"},
		TLS:           &TLS{CertFile: filepath.Join(dir, "tls/cert.pem"), KeyFile: "/etc/ssl/key.pem"},
		CleartextAuth: CleartextAuth{Networks: []string{"10.0.0.0/8", "192.0.2.7"}},
		StateDir:      filepath.Join(dir, "state"),
		Cache:         Cache{BodyBytes: "32MiB", MaxMessageBytes: "512KiB"},
		Log:           Log{Level: "debug", Format: "json"},
		Limits: Limits{
			MaxConnections: 200, MaxConnectionsPerIP: 5,
			IdleTimeout: "15m", AuthIdleTimeout: "30s", WriteTimeout: "1m", BackendTimeout: "45s",
			AuthFailureDelay: "1s", MaxAuthFailureDelay: "8s",
			TrustedNetworks: []string{"10.1.0.0/16"},
		},
		Accounts: []Account{
			{User: "alice", PasswordHash: testHash, Backend: Backend{
				Type: "maildir", Maildir: &MaildirBackend{Path: filepath.Join(dir, "mail/alice"), OnDelete: "keep"}}},
			{User: "bob@example.org", PasswordHash: testHash, PasswordHashFile: filepath.Join(dir, "bob.hash"), Backend: Backend{
				Type: "maildir", Maildir: &MaildirBackend{Path: "/srv/mail/bob", OnDelete: "remove"}}},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Load:\n got %+v\nwant %+v", c, want)
	}
}

func TestStateDirDefault(t *testing.T) {
	c, err := parseString(t, minimal)
	if err != nil {
		t.Fatal(err)
	}
	if want := "/etc/popbridge/popbridge-state"; c.StateDir != want {
		t.Errorf("StateDir = %q, want %q", c.StateDir, want)
	}
	c, err = parseString(t, minimal+"state_dir: /var/lib/popbridge\n")
	if err != nil || c.StateDir != "/var/lib/popbridge" {
		t.Errorf("StateDir = %q, %v", c.StateDir, err)
	}
}

func TestLoadState(t *testing.T) {
	dir := t.TempDir()
	// A hash from an unset variable and a missing hash file: Load fails,
	// LoadState does not read them.
	src := `
listen: {pop3: 127.0.0.1:1110}
accounts:
  - user: alice
    password_hash: ${POPBRIDGE_TEST_UNSET}
    backend: {type: maildir, path: a}
  - user: bob
    password_hash_file: missing.hash
    backend: {type: maildir, path: b}
`
	path := filepath.Join(dir, "popbridge.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil {
		t.Fatal("Load succeeded without the secrets")
	}
	state, users, err := LoadState(path)
	if err != nil || state != filepath.Join(dir, DefaultStateDir) || !reflect.DeepEqual(users, []string{"alice", "bob"}) {
		t.Errorf("LoadState = %q, %q, %v", state, users, err)
	}
	if err := os.WriteFile(path, []byte(src+"state_dir: st\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if state, _, _ := LoadState(path); state != filepath.Join(dir, "st") {
		t.Errorf("LoadState with state_dir: %q", state)
	}
	if err := os.WriteFile(path, []byte(src+"colour: blue\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadState(path); err == nil || !strings.Contains(err.Error(), `unknown key "colour"`) {
		t.Errorf("LoadState with an unknown key: %v", err)
	}
	if _, _, err := LoadState(filepath.Join(dir, "nope.yaml")); err == nil {
		t.Error("LoadState of a missing file succeeded")
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[ByteSize]int64{
		"": 0, "0": 0, "1234": 1234, "10B": 10, "512KiB": 512 << 10, "64MiB": 64 << 20, "64mib": 64 << 20,
		"2GiB": 2 << 30, "500KB": 500_000, "64MB": 64_000_000, "1GB": 1_000_000_000, " 8 MiB ": 8 << 20,
	} {
		if got, err := in.Value(); err != nil || got != want {
			t.Errorf("ByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []ByteSize{"x", "MiB", "-1", "1.5MiB", "12 parsecs", "9223372036854775807GiB", "99999999999999999999"} {
		if n, err := in.Value(); err == nil {
			t.Errorf("ByteSize(%q) = %d, want an error", in, n)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("Load of a missing file: %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func TestProblems(t *testing.T) {
	tests := []struct {
		name string
		src  string
		env  map[string]string
		want []string // every line of the error, in order
	}{
		{"minimal", minimal, nil, nil},
		{"empty file", ``, nil, []string{
			"listen: set pop3, pop3s or both",
			"accounts: list at least one account",
		}},
		{"syntax error", "listen: [\n", nil, []string{
			"a value is missing here, or a [ or { is not closed",
		}},
		{"unknown top-level key", minimal + "colour: blue\n", nil, []string{
			`unknown key "colour"`,
		}},
		{"unknown nested key", `
listen:
  pop3: 127.0.0.1:1110
  imap: 127.0.0.1:143
accounts: []
`, nil, []string{
			`listen: unknown key "imap"`,
			"accounts: list at least one account",
		}},
		{"unknown backend key", minimal + "      pathh: typo\n      on_delete: remove\n", nil, []string{
			`accounts[0].backend: unknown key "pathh" for backend type maildir (did you mean path?)`,
		}},
		{"unknown keys in two places", minimal + "      x: 1\n  - user: bob\n    passwd: x\n", nil, []string{
			`accounts[0].backend: unknown key "x" for backend type maildir`,
			`accounts[1]: unknown key "passwd"`,
			"accounts[1].password_hash: must be set (make one with popbridge hash-password)",
			"accounts[1].backend.type: must be set (one of maildir, pop3, imap, gmail, graph)",
		}},
		{"backend wrong value type", minimal + "      on_delete: [a]\n", nil, []string{
			"accounts[0].backend.on_delete: must be a single value, not a list",
		}},
		{"backend not a mapping", `
listen: {pop3: ":1110"}
accounts:
  - user: a
    password_hash: "HASH"
    backend: maildir
`, nil, []string{
			`accounts[0].backend: must be a mapping with a type key, not "maildir" (e.g. {type: maildir, path: /var/mail/alice})`,
		}},
		{"backend type missing and unknown", `
listen: {pop3: ":1110"}
accounts:
  - user: a
    password_hash: "HASH"
    backend: {path: /x}
  - user: b
    password_hash: "HASH"
    backend: {type: imapx, host: x}
`, nil, []string{
			"accounts[0].backend.type: must be set (one of maildir, pop3, imap, gmail, graph)",
			`accounts[1].backend.type: unknown type "imapx" (want one of maildir, pop3, imap, gmail, graph)`,
		}},
		{"duplicate key", "listen: {pop3: \":1110\"}\nlisten: {pop3: \":1111\"}\n", nil, []string{
			"listen: set twice (first at line 1); keep one",
		}},
		{"backend from an alias", `
listen: {pop3: ":1110"}
accounts:
  - user: a
    password_hash: "HASH"
    backend: &b {type: maildir, path: /m/a}
  - user: b
    password_hash: "HASH"
    backend: *b
`, nil, []string{
			"accounts[1].backend.path: same Maildir as accounts[0]; each Maildir may belong to one account only",
		}},
		{"backend merge key", `
listen: {pop3: ":1110"}
state_dir: /s
accounts:
  - user: a
    password_hash: "HASH"
    backend: &b {type: maildir, path: /m/a, on_delete: keep}
  - user: b
    password_hash: "HASH"
    backend:
      <<: *b
      path: /m/b
`, nil, nil},
		{"backend merge key with an unknown key", `
listen: {pop3: ":1110"}
accounts:
  - user: a
    password_hash: "HASH"
    backend: &b {type: maildir, path: /m/a, colour: red}
  - user: b
    password_hash: "HASH"
    backend:
      <<: [*b]
      path: /m/b
`, nil, []string{
			`accounts[0].backend: unknown key "colour" for backend type maildir`,
			`accounts[1].backend: unknown key "colour" for backend type maildir`,
		}},
		{"listeners", `
listen:
  pop3: localhost
  pop3s: 127.0.0.1:99999
accounts:
  - user: a
    password_hash: "HASH"
    backend: {type: maildir, path: /m}
`, nil, []string{
			`listen.pop3: invalid address "localhost" (want host:port, e.g. 127.0.0.1:1110)`,
			`listen.pop3s: invalid port "99999"`,
			"listen.pop3s: needs tls",
		}},
		{"same address and tls keys", `
listen: {pop3: ":1110", pop3s: ":1110"}
tls: {cert_file: c.pem}
accounts:
  - user: a
    password_hash: "HASH"
    backend: {type: maildir, path: /m}
`, nil, []string{
			"listen.pop3s: same address as listen.pop3",
			"tls.key_file: must be set (or self_signed: true)",
		}},
		{"self-signed", minimal + "tls: {self_signed: true, names: [nas.lan, '*.home.arpa', 192.168.1.10, 'fd00::1']}\n", nil, nil},
		{"self-signed with files and bad names", minimal + "tls: {self_signed: true, cert_file: c.pem, names: [nas.lan, 'a b', '', -x.lan, x..lan]}\n", nil, []string{
			"tls.self_signed: excludes cert_file and key_file (the certificate is created in state_dir)",
			`tls.names[1]: invalid name "a b" (want a host name such as nas.lan or an IP address)`,
			`tls.names[2]: invalid name "" (want a host name such as nas.lan or an IP address)`,
			`tls.names[3]: invalid name "-x.lan" (want a host name such as nas.lan or an IP address)`,
			`tls.names[4]: invalid name "x..lan" (want a host name such as nas.lan or an IP address)`,
		}},
		{"names without self-signed", minimal + "tls: {cert_file: c.pem, key_file: k.pem, names: [nas.lan]}\n", nil, []string{
			"tls.names: only with self_signed (a certificate file already names its hosts)",
		}},
		{"tls min_version", minimal + "tls: {self_signed: true, min_version: 1.0}\n", nil, nil},
		{"tls bad min_version", minimal + "tls: {self_signed: true, min_version: 1}\n", nil, []string{
			`tls.min_version: unknown version "1" (want 1.0, 1.1, 1.2 or 1.3)`,
		}},
		{"cleartext modes", minimal + "cleartext_auth: always\n", nil, nil},
		{"cleartext never without tls", minimal + "cleartext_auth: never\n", nil, []string{
			"cleartext_auth: never needs tls, or no client could log in",
		}},
		{"cleartext unknown mode", minimal + "cleartext_auth: sometimes\n", nil, []string{
			`cleartext_auth: unknown mode "sometimes" (want never, loopback, always or a list of networks)`,
		}},
		{"cleartext bad networks", minimal + "cleartext_auth: [10.0.0.0/8, 10.0.0.0/33, fe80::/10, bogus]\n", nil, []string{
			`cleartext_auth[1]: invalid network "10.0.0.0/33" (want a CIDR such as 10.0.0.0/8)`,
			`cleartext_auth[3]: invalid network "bogus" (want a CIDR such as 10.0.0.0/8)`,
		}},
		{"cleartext empty list", minimal + "cleartext_auth: []\n", nil, []string{
			"cleartext_auth: list at least one network, or use never",
		}},
		{"cleartext mapping", minimal + "cleartext_auth: {mode: never}\n", nil, []string{
			"cleartext_auth: must be never, loopback, always or a list of networks, not a mapping",
		}},
		{"log", minimal + "log: {level: verbose, format: xml}\n", nil, []string{
			`log.level: unknown level "verbose" (want trace, debug, info, warn or error)`,
			`log.format: unknown format "xml" (want auto, console or json)`,
		}},
		{"limits", minimal + `limits:
  idle_timeout: 10
  auth_failure_delay: 2 seconds
  write_timeout: -1s
  trusted_networks: [127.0.0.1, 10.0.0/8]
`, nil, []string{
			`limits.idle_timeout: invalid duration "10" (want e.g. 90s, 10m, 1h)`,
			`limits.auth_failure_delay: invalid duration "2 seconds" (want e.g. 90s, 10m, 1h)`,
			`limits.trusted_networks[1]: invalid network "10.0.0/8" (want a CIDR such as 10.0.0.0/8)`,
		}},
		{"limits wrong type", minimal + "limits: {max_connections: many}\n", nil, []string{
			`limits.max_connections: must be a whole number, not "many"`,
		}},
		{"accounts", `
listen: {pop3: ":1110"}
state_dir: /var/lib/popbridge
accounts:
  - user: alice
    password_hash: "HASH"
    backend: {type: maildir, path: /m/alice, on_delete: keep}
  - user: ""
    backend: {type: maildir}
  - user: alice
    password_hash: "$2a$12$tooshort"
    backend: {type: maildir, path: /m/alice/, on_delete: trash}
  - user: "bob smith"
    password_hash: "HASH"
    backend: {type: maildir, path: /m/bob}
`, nil, []string{
			"accounts[1].user: must be set",
			"accounts[1].password_hash: must be set (make one with popbridge hash-password)",
			"accounts[1].backend.path: must be set",
			`accounts[2].user: duplicate of accounts[0].user "alice"`,
			"accounts[2].password_hash: not a valid bcrypt hash (make one with popbridge hash-password)",
			`accounts[2].backend.on_delete: unknown policy "trash" (want remove or keep)`,
			"accounts[2].backend.path: same Maildir as accounts[0]; each Maildir may belong to one account only",
			"accounts[3].user: must be UTF-8 without spaces or control characters",
		}},
		{"keep without state_dir", minimal + "      on_delete: keep\n", nil, nil},
		{"cache sizes", minimal + "cache: {body_bytes: 64 megs, max_message_bytes: -1}\n", nil, []string{
			`cache.body_bytes: invalid size "64 megs" (want e.g. 64MiB, 512KiB or a number of bytes)`,
			`cache.max_message_bytes: invalid size "-1" (want e.g. 64MiB, 512KiB or a number of bytes)`,
		}},
		{"cache item above the cache", minimal + "cache: {body_bytes: 1MiB, max_message_bytes: 2MiB}\n", nil, []string{
			"cache.max_message_bytes: 2MiB is more than cache.body_bytes (1MiB), so no such message could be kept",
		}},
		{"cache item above the default cache", minimal + "cache: {max_message_bytes: 1GiB}\n", nil, []string{
			"cache.max_message_bytes: 1GiB is more than cache.body_bytes (default 64MiB), so no such message could be kept",
		}},
		{"cache item zero", minimal + "cache: {max_message_bytes: 0}\n", nil, []string{
			"cache.max_message_bytes: must be more than 0 (to turn the body cache off, set body_bytes: 0)",
		}},
		{"cache off", minimal + "cache: {body_bytes: 0, max_message_bytes: 1GiB}\n", nil, nil},
		{"cache unknown key", minimal + "cache: {bodies: 5}\n", nil, []string{
			`cache: unknown key "bodies"`,
		}},
		{"env var set", strings.Replace(minimal, `"HASH"`, "${POPBRIDGE_TEST_PW}", 1),
			map[string]string{"POPBRIDGE_TEST_PW": testHash}, nil},
		{"env var unset", strings.Replace(minimal, `"HASH"`, "${POPBRIDGE_TEST_UNSET}", 1), nil, []string{
			"accounts[0].password_hash: environment variable POPBRIDGE_TEST_UNSET is not set",
		}},
		{"env var set to a bad hash", strings.Replace(minimal, `"HASH"`, "${POPBRIDGE_TEST_PW}", 1),
			map[string]string{"POPBRIDGE_TEST_PW": "hunter2"}, []string{
				"accounts[0].password_hash: not a valid bcrypt hash (make one with popbridge hash-password)",
			}},
		{"env var bad reference", strings.Replace(minimal, `"HASH"`, `"${1X}"`, 1), nil, []string{
			`accounts[0].password_hash: invalid environment variable name "1X"`,
		}},
		{"env var unterminated", strings.Replace(minimal, `"HASH"`, `"${X"`, 1), nil, []string{
			"accounts[0].password_hash: unterminated ${ (want ${NAME})",
		}},
		{"hash file missing", strings.Replace(minimal, `password_hash: "HASH"`, "password_hash_file: /nonexistent/popbridge.hash", 1), nil, []string{
			"accounts[0].password_hash_file: open /nonexistent/popbridge.hash: no such file or directory",
		}},
		{"hash and hash file", strings.Replace(minimal, `password_hash: "HASH"`, "password_hash: \"HASH\"\n    password_hash_file: h", 1), nil, []string{
			"accounts[0].password_hash: set either password_hash or password_hash_file, not both",
		}},
		{"every problem at once", `
listen: {pop3s: ":1995"}
cleartext_auth: [300.0.0.0/8]
log: {level: loud}
limits: {idle_timeout: soon}
accounts:
  - user: a
    password_hash: ${POPBRIDGE_TEST_UNSET}
    backend: {type: maildir}
  - user: a
    password_hash: nope
    backend: {type: jmap}
`, nil, []string{
			"accounts[0].password_hash: environment variable POPBRIDGE_TEST_UNSET is not set",
			"listen.pop3s: needs tls",
			`cleartext_auth[0]: invalid network "300.0.0.0/8" (want a CIDR such as 10.0.0.0/8)`,
			`log.level: unknown level "loud" (want trace, debug, info, warn or error)`,
			`limits.idle_timeout: invalid duration "soon" (want e.g. 90s, 10m, 1h)`,
			"accounts[0].backend.path: must be set",
			`accounts[1].user: duplicate of accounts[0].user "a"`,
			"accounts[1].password_hash: not a valid bcrypt hash (make one with popbridge hash-password)",
			`accounts[1].backend.type: unknown type "jmap" (want one of maildir, pop3, imap, gmail, graph)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c, err := parseString(t, tt.src)
			got := errLines(err)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("problems:\n got %q\nwant %q", got, tt.want)
			}
			if (err == nil) != (c != nil) {
				t.Errorf("config %v with error %v: want exactly one", c, err)
			}
		})
	}
}

func TestHashFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("good.hash", testHash+"\r\n")
	write("empty.hash", "\n")
	write("bad.hash", "${NOT_EXPANDED}\n")
	src := `
listen: {pop3: ":1110"}
accounts:
  - user: good
    password_hash_file: good.hash
    backend: {type: maildir, path: good}
  - user: empty
    password_hash_file: empty.hash
    backend: {type: maildir, path: empty}
  - user: bad
    password_hash_file: bad.hash
    backend: {type: maildir, path: bad}
`
	_, err := parse("cfg.yaml", []byte(src), dir)
	want := []string{
		"accounts[1].password_hash_file: " + filepath.Join(dir, "empty.hash") + " is empty",
		"accounts[2].password_hash_file: not a valid bcrypt hash (make one with popbridge hash-password)",
	}
	if got := errLines(err); !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n got %q\nwant %q", got, want)
	}

	c, err := parse("cfg.yaml", []byte(src[:strings.Index(src, "  - user: empty")]), dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.Accounts[0].PasswordHash != testHash {
		t.Errorf("hash from file = %q, want %q (trailing CRLF trimmed)", c.Accounts[0].PasswordHash, testHash)
	}
}

func TestExpandEnv(t *testing.T) {
	t.Setenv("PB_A", "x")
	t.Setenv("PB_EMPTY", "")
	tests := []struct{ in, want, err string }{
		{"plain", "plain", ""},
		{testHash, testHash, ""},
		{"$A and $PB_A", "$A and $PB_A", ""},
		{"${PB_A}", "x", ""},
		{"a${PB_A}b${PB_A}", "axbx", ""},
		{"${PB_EMPTY}", "", ""},
		{"${PB_NOPE_UNSET}", "", "environment variable PB_NOPE_UNSET is not set"},
		{"${}", "", `invalid environment variable name ""`},
		{"${A-B}", "", `invalid environment variable name "A-B"`},
		{"${PB_A", "", "unterminated ${ (want ${NAME})"},
	}
	for _, tt := range tests {
		got, err := expandEnv(tt.in)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("expandEnv(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("expandEnv(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestValidateBuiltInCode(t *testing.T) {
	c := &Config{
		Listen: Listen{POP3: "127.0.0.1:0"},
		Accounts: []Account{{User: "u", PasswordHash: testHash,
			Backend: Backend{Type: TypeMaildir}}},
	}
	want := []string{"accounts[0].backend: maildir settings missing"}
	if got := errLines(c.Validate()); !reflect.DeepEqual(got, want) {
		t.Errorf("Validate = %q, want %q", got, want)
	}
	c.Accounts[0].Backend.Maildir = &MaildirBackend{Path: "/m"}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestTLSLoad(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testcert.New(t).WriteFiles(t, cert, key)
	cfg, err := (&TLS{CertFile: cert, KeyFile: key}).Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Certificates) != 1 || cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("tls config: %d certificates, min version %x", len(cfg.Certificates), cfg.MinVersion)
	}
	if _, err := (&TLS{CertFile: key, KeyFile: cert}).Load(); err == nil {
		t.Error("Load with swapped files: no error")
	}
}

// TestExamples keeps the example configurations in docs/examples valid.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../docs/examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no example configurations found in docs/examples")
	}
	t.Setenv("BOB_PASSWORD_HASH", testHash)
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("%s:\n%v", f, err)
		}
	}
}

func TestTLSFiles(t *testing.T) {
	c, err := parseString(t, minimal+"state_dir: /var/lib/popbridge\ntls: {self_signed: true}\n")
	if err != nil {
		t.Fatal(err)
	}
	if cert, key := c.TLSFiles(); cert != "/var/lib/popbridge/tls/cert.pem" || key != "/var/lib/popbridge/tls/key.pem" {
		t.Errorf("self-signed TLSFiles = %q, %q", cert, key)
	}
	c, err = parseString(t, minimal+"tls: {cert_file: c.pem, key_file: /k.pem}\n")
	if err != nil {
		t.Fatal(err)
	}
	if cert, key := c.TLSFiles(); cert != "/etc/popbridge/c.pem" || key != "/k.pem" {
		t.Errorf("TLSFiles = %q, %q", cert, key)
	}
	if cert, key := (&Config{}).TLSFiles(); cert != "" || key != "" {
		t.Errorf("TLSFiles without tls = %q, %q", cert, key)
	}
}

func TestTLSMinVersion(t *testing.T) {
	for src, want := range map[string]uint16{
		"tls: {self_signed: true}\n":                     tls.VersionTLS12,
		"tls: {self_signed: true, min_version: 1.0}\n":   tls.VersionTLS10,
		"tls: {self_signed: true, min_version: '1.1'}\n": tls.VersionTLS11,
		"tls: {self_signed: true, min_version: 1.2}\n":   tls.VersionTLS12,
		"tls: {self_signed: true, min_version: 1.3}\n":   tls.VersionTLS13,
	} {
		c, err := parseString(t, minimal+src)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if got := c.TLS.MinTLSVersion(); got != want {
			t.Errorf("%s: MinTLSVersion %s, want %s", src, tls.VersionName(got), tls.VersionName(want))
		}
	}
}
