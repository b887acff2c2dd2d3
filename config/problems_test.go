package config

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// TestProblemLines feeds bad files and checks every line of the error,
// in full: the file, the line, the key and the problem in plain words.
func TestProblemLines(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"bool", minimal + "tls: {self_signed: yes please}\n", []string{
			`cfg.yaml:10: tls.self_signed: must be true or false, not "yes please"`,
		}},
		{"bool from a number", minimal + "tls:\n  self_signed: 1\n", []string{
			`cfg.yaml:11: tls.self_signed: must be true or false, not 1`,
		}},
		{"mapping from a string", minimal + "tls: cert.pem\n", []string{
			`cfg.yaml:10: tls: must be a mapping (indented key: value lines), not "cert.pem"`,
		}},
		{"mapping from a list", minimal + "limits: [1, 2]\n", []string{
			`cfg.yaml:10: limits: must be a mapping (indented key: value lines), not a list`,
		}},
		{"list from a string", minimal + "tls: {self_signed: true, names: nas.lan}\n", []string{
			`cfg.yaml:10: tls.names: must be a list, not "nas.lan" (one entry is written [nas.lan])`,
		}},
		{"list of lists", minimal + "limits: {trusted_networks: [[10.0.0.0/8]]}\n", []string{
			`cfg.yaml:10: limits.trusted_networks[0]: must be a single value, not a list`,
		}},
		{"string from a mapping", minimal + "log:\n  level: {x: 1}\n", []string{
			`cfg.yaml:11: log.level: must be a single value, not a mapping`,
		}},
		{"whole numbers", minimal + "limits:\n  max_connections: many\n  max_connections_per_ip: 1.5\n", []string{
			`cfg.yaml:11: limits.max_connections: must be a whole number, not "many"`,
			`cfg.yaml:12: limits.max_connections_per_ip: must be a whole number, not 1.5`,
		}},
		{"number too large", minimal + "limits: {max_connections: 99999999999999999999}\n", []string{
			`cfg.yaml:10: limits.max_connections: must be a whole number, not 99999999999999999999`,
		}},
		{"accounts not a list", "listen: {pop3: ':1110'}\naccounts:\n  user: alice\n", []string{
			`cfg.yaml:3: accounts: must be a list, not a mapping (one entry is written [])`,
		}},
		{"misspelt send key", minimal + "    send: {type: smtp, adr: smtp.example.com:587, username: alice@example.com, password: pw}\n", []string{
			`cfg.yaml:10: accounts[0].send: unknown key "adr" (did you mean addr?)`,
		}},
		{"submission without tls", strings.Replace(minimal, "listen:\n", "listen:\n  submission: 127.0.0.1:1587\n", 1), []string{
			`cfg.yaml:3: listen.submission: needs tls (a server certificate: SMTP clients log in only over TLS, except where cleartext_auth allows)`,
		}},
		{"misspelt top-level key", minimal + "stat_dir: /var/lib/popbridge\n", []string{
			`cfg.yaml:10: unknown key "stat_dir" (did you mean state_dir?)`,
		}},
		{"misspelt key, no must-be-set", strings.Replace(minimal, "password_hash:", "pasword_hash:", 1), []string{
			`cfg.yaml:6: accounts[0]: unknown key "pasword_hash" (did you mean password_hash?)`,
		}},
		{"misspelt backend keys", strings.Replace(strings.Replace(minimal, "type:", "tpye:", 1), "path:", "paht:", 1), []string{
			`cfg.yaml:8: accounts[0].backend: unknown key "tpye" (did you mean type?)`,
			`cfg.yaml:9: accounts[0].backend: unknown key "paht" (did you mean path?)`,
		}},
		{"misspelt key for the backend type", strings.Replace(minimal, "path:", "paht:", 1), []string{
			`cfg.yaml:9: accounts[0].backend: unknown key "paht" for backend type maildir (did you mean path?)`,
		}},
		{"words in another order", minimal + "limits: {timeout_idle: 5m, maxconnections: 3}\n", []string{
			`cfg.yaml:10: limits: unknown key "timeout_idle"`,
			`cfg.yaml:10: limits: unknown key "maxconnections" (did you mean max_connections?)`,
		}},
		{"unknown key, nothing close", minimal + "colour: blue\n", []string{
			`cfg.yaml:10: unknown key "colour"`,
		}},
		{"tab in the indentation", "listen:\n\tpop3: ':1110'\n", []string{
			`cfg.yaml:2: a tab in the indentation; YAML indents with spaces only, so replace the tab with spaces`,
		}},
		{"tabs after spaces", minimal + "log:\n  level: info\n \tformat: json\n", []string{
			`cfg.yaml:12: a tab in the indentation; YAML indents with spaces only, so replace the tab with spaces`,
		}},
		{"unclosed bracket", minimal + "tls: {self_signed: true\n", []string{
			`cfg.yaml:10: a { is not closed, or a comma is missing between its entries`,
		}},
		{"bad indentation", "listen:\n  pop3: ':1110'\n pop3s: ':1995'\n", []string{
			`cfg.yaml:3: this line does not line up with the keys above it (check the indentation)`,
		}},
		{"bad indentation after a list over two lines", "listen: {pop3: ':1110',\n  pop3s: ':1995'}\ntls:\n  cert_file: x\n key_file: y\n", []string{
			`cfg.yaml:5: this line does not line up with the keys above it (check the indentation)`,
		}},
		{"a long file", "listen:\n  pop3: ':1110'\naccounts:\n" + strings.Repeat("  - user: u\n    backend: {type: maildir}\n", 500) + " bad: x\n", []string{
			`cfg.yaml:1004: this line does not line up with the keys above it (check the indentation)`,
		}},
		{"colon in a value", minimal + "log: level: info\n", []string{
			`cfg.yaml:10: a "key: value" where none can be (check the indentation, or quote a value that holds ": ")`,
		}},
		{"duplicate key", minimal + "log: {level: info}\nlog: {level: debug}\n", []string{
			`cfg.yaml:11: log: set twice (first at line 10); keep one`,
		}},
		{"window", strings.Replace(minimal, "type: maildir\n      path: mail/alice", "type: gmail\n      oauth2: {provider: google, client_id: x}\n      window: 30d", 1), []string{
			`cfg.yaml:10: accounts[0].backend.window: must be all, {since: 30d}, {since: YYYY-MM-DD} or {batch: N}, not "30d"`,
		}},
		{"graph window and unknown key", strings.Replace(minimal, "type: maildir\n      path: mail/alice", "type: graph\n      oauth2: {provider: microsoft, client_id: x}\n      window: 7d\n      label: x", 1), []string{
			`cfg.yaml:10: accounts[0].backend.window: must be all, {since: 30d}, {since: YYYY-MM-DD} or {batch: N}, not "7d"`,
			`cfg.yaml:11: accounts[0].backend: unknown key "label" for backend type graph`,
		}},
		{"a list, not a mapping", "- listen\n- accounts\n", []string{
			`cfg.yaml:1: must be a mapping (indented key: value lines), not a list`,
		}},
		{"only a word", "popbridge\n", []string{
			`cfg.yaml:1: must be a mapping (indented key: value lines), not "popbridge"`,
		}},
		{"misspelt section, no must-be-set", strings.Replace(minimal, "listen:", "listne:", 1), []string{
			`cfg.yaml:2: unknown key "listne" (did you mean listen?)`,
		}},
		{"empty values are defaults", minimal + "log:\ncache: ~\ntls:\n  self_signed: true\n  names:\n", nil},
		{"flow mapping, two problems on one line", minimal + "limits: {max_connections: x, idle_timeout: [1m]}\n", []string{
			`cfg.yaml:10: limits.max_connections: must be a whole number, not "x"`,
			`cfg.yaml:10: limits.idle_timeout: must be a single value, not a list`,
		}},
		{"alias of a bad value", minimal + "x-defaults: &d {level: [a]}\nlog: *d\n", []string{
			`cfg.yaml:10: unknown key "x-defaults"`,
			`cfg.yaml:10: log.level: must be a single value, not a list`,
		}},
		{"anchor merged into itself", minimal + "log: &l\n  <<: *l\n  level: info\n", []string{
			`cfg.yaml: the anchor &l holds an alias to itself (*l), which never ends`,
		}},
		{"backend merged into itself", "listen: {pop3: ':1110'}\naccounts:\n  - user: a\n    backend: &b\n      <<: *b\n      type: maildir\n", []string{
			`cfg.yaml: the anchor &b holds an alias to itself (*b), which never ends`,
		}},
		{"anchor inside itself", minimal + "x: &x [*x]\n", []string{
			`cfg.yaml:10: unknown key "x"`,
		}},
		{"missing top-level keys", "\n# popbridge\nlog: {level: info}\n", []string{
			`cfg.yaml:3: listen: set pop3, pop3s or both`,
			`cfg.yaml:3: accounts: list at least one account`,
		}},
		{"empty file", "", []string{
			`cfg.yaml: listen: set pop3, pop3s or both`,
			`cfg.yaml: accounts: list at least one account`,
		}},
		{"every problem at once", `
listen:
  pop3: 127.0.0.1:1110
  pop3s: [":1995"]
tls: {self_signed: maybe}
log: {level: loud, fromat: json}
limits: {idle_timeout: soon, max_connections: lots}
accounts:
  - user: alice
    password_hash: "HASH"
    backend: {type: maildir, path: /m/a, on_delete: trash, ondelete: keep}
  - user: alice
    backend: {type: imap, addr: imap.example.com, password: x, folder: [INBOX]}
`, []string{
			`cfg.yaml:4: listen.pop3s: must be a single value, not a list`,
			`cfg.yaml:5: tls.self_signed: must be true or false, not "maybe"`,
			`cfg.yaml:6: log: unknown key "fromat" (did you mean format?)`,
			`cfg.yaml:7: limits.max_connections: must be a whole number, not "lots"`,
			`cfg.yaml:11: accounts[0].backend: unknown key "ondelete" for backend type maildir (did you mean on_delete?)`,
			`cfg.yaml:13: accounts[1].backend.folder: must be a single value, not a list`,
			`cfg.yaml:6: log.level: unknown level "loud" (want trace, debug, info, warn or error)`,
			`cfg.yaml:7: limits.idle_timeout: invalid duration "soon" (want e.g. 90s, 10m, 1h)`,
			`cfg.yaml:12: accounts[1].user: duplicate of accounts[0].user "alice"`,
			`cfg.yaml:12: accounts[1].password_hash: must be set (make one with popbridge hash-password)`,
			`cfg.yaml:13: accounts[1].backend.addr: invalid address "imap.example.com" (want host:port, e.g. 127.0.0.1:1110)`,
			`cfg.yaml:13: accounts[1].backend.username: must be set for auth password`,
		}},
	}
	typeNames := regexp.MustCompile(`!!|config\.|\[\]string|\bint\b|unmarshal|struct`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse("cfg.yaml", []byte(strings.ReplaceAll(tt.src, "HASH", testHash)), "/etc/popbridge")
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("problems:\n got %q\nwant %q", got, tt.want)
			}
			for _, l := range got {
				if typeNames.MatchString(l) {
					t.Errorf("a Go or YAML type name in %q", l)
				}
			}
			var p *Problem
			if err != nil && !errors.As(err, &p) {
				t.Errorf("%v: not a *Problem", err)
			}
		})
	}
}

func TestClosest(t *testing.T) {
	known := []string{"path", "on_delete", "password_hash", "password_hash_file", "state_dir", "type"}
	for in, want := range map[string]string{
		"pth": "path", "paht": "path", "ondelete": "on_delete", "on-delete": "on_delete", "On_Delete": "on_delete",
		"password_has": "password_hash", "statedir": "state_dir", "tpye": "type", "typo": "type",
		"colour": "", "x": "", "password": "", "tyep": "type",
	} {
		if got := closest(in, known); got != want {
			t.Errorf("closest(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParse: no input makes parse panic or hang, and every problem it
// reports is a *Problem naming the file.
func FuzzParse(f *testing.F) {
	for _, s := range []string{minimal, "listen:\n\tpop3: x\n", "a: &a [*a]\n", "log: &l\n  <<: *l\n",
		minimal + "tls: {self_signed: yes, names: x}\nlimits: {max_connections: 1.5}\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		_, err := parse("cfg.yaml", []byte(src), "/etc/popbridge")
		for _, e := range unjoin(err) {
			var p *Problem
			if !errors.As(e, &p) || p.File != "cfg.yaml" {
				t.Fatalf("%q: problem %q is not a *Problem of cfg.yaml", src, e)
			}
		}
	})
}

// TestAliasBomb: aliases of aliases that expand a small file to 10^9
// values are refused, not followed.
func TestAliasBomb(t *testing.T) {
	src := minimal + "x0: &x0 [a, a, a, a, a, a, a, a, a, a]\n"
	for i := 1; i < 9; i++ {
		src += fmt.Sprintf("x%d: &x%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*x%d, ", i-1), 10), ", "))
	}
	_, err := parseString(t, src)
	want := "cfg.yaml:11: the aliases (*name) expand the file to more than 200000 values; use fewer aliases of aliases"
	if got := strings.Split(fmt.Sprint(err), "\n")[0]; got != want {
		t.Errorf("first problem %q, want %q", got, want)
	}
}
