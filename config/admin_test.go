package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestAdmin(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "admin.hash"), []byte(testHash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withListen := func(listen, extra string) string {
		return strings.Replace(minimal, "  pop3: 127.0.0.1:1110\n", "  pop3: 127.0.0.1:1110\n"+listen, 1) + extra
	}
	on := func(extra string) string {
		return withListen("  admin: 127.0.0.1:8025\n", "admin:\n  password_hash: HASH\n"+extra)
	}
	tests := []struct {
		name     string
		src      string
		addr     string
		loopback bool
		want     []string
	}{
		{"off", minimal, "", false, nil},
		{"on", on(""), "127.0.0.1:8025", true, nil},
		{"port only binds loopback", withListen("  admin: 8025\n", "admin: {password_hash: HASH}\n"), "127.0.0.1:8025", true, nil},
		{"colon port binds loopback", withListen("  admin: ':8025'\n", "admin: {password_hash: HASH}\n"), "127.0.0.1:8025", true, nil},
		{"LAN bind", withListen("  admin: 0.0.0.0:8025\n", "admin:\n  password_hash_file: admin.hash\n  hosts: [nas.lan, '192.168.1.10:8025']\n  cleartext: [192.168.1.0/24]\n"), "0.0.0.0:8025", false, nil},
		{"TLS", on("  tls: true\n  cleartext: never\ntls: {self_signed: true}\n"), "127.0.0.1:8025", true, nil},
		{"no password hash", withListen("  admin: 8025\n", ""), "", false, []string{
			"listen.admin: needs an admin password: run popbridge hash-password and put the hash in admin.password_hash",
		}},
		{"empty password hash", withListen("  admin: 8025\n", "admin: {hosts: [nas.lan]}\n"), "", false, []string{
			"admin.password_hash: must be set: run popbridge hash-password and put the hash here",
		}},
		{"not a hash", withListen("  admin: 8025\n", "admin: {password_hash: s3cret}\n"), "", false, []string{
			"admin.password_hash: not a valid bcrypt hash (make one with popbridge hash-password)",
		}},
		{"missing hash file", withListen("  admin: 8025\n", "admin: {password_hash_file: nope.hash}\n"), "", false, []string{
			"admin.password_hash_file: open " + filepath.Join(dir, "nope.hash") + ": no such file or directory",
		}},
		{"section without listener", minimal + "admin: {password_hash: HASH}\n", "", false, []string{
			"admin: set, but listen.admin is not (the page is off)",
		}},
		{"bad address", withListen("  admin: localhost\n", "admin: {password_hash: HASH}\n"), "", false, []string{
			`listen.admin: invalid address "localhost" (want host:port, e.g. 127.0.0.1:1110)`,
		}},
		{"same as pop3", withListen("  admin: 127.0.0.1:1110\n", "admin: {password_hash: HASH}\n"), "", false, []string{
			"listen.admin: same address as another listener",
		}},
		{"bad hosts", on("  hosts: ['nas lan', 'nas.lan:x', '*.lan']\n"), "", false, []string{
			`admin.hosts[0]: invalid name "nas lan" (want a host name such as nas.lan, an IP address, or either with :port)`,
			`admin.hosts[1]: invalid port in "nas.lan:x"`,
			`admin.hosts[2]: invalid name "*.lan" (want a host name such as nas.lan, an IP address, or either with :port)`,
		}},
		{"TLS without certificate", on("  tls: true\n"), "", false, []string{
			"admin.tls: needs the tls section (the page uses its certificate)",
		}},
		{"never without TLS", on("  cleartext: never\n"), "", false, []string{
			"admin.cleartext: never needs admin.tls: true, or nobody could use the page",
		}},
		{"bad cleartext", on("  cleartext: [10.0.0.0/33]\n"), "", false, []string{
			`admin.cleartext[0]: invalid network "10.0.0.0/33" (want a CIDR such as 10.0.0.0/8)`,
		}},
		{"cleartext of the wrong kind", on("  cleartext: {lan: yes}\n"), "", false, []string{
			`admin.cleartext: must be never, loopback, always or a list of networks, not a mapping`,
		}},
		{"unknown key", on("  pasword_hash_file: x\n"), "", false, []string{
			`admin: unknown key "pasword_hash_file" (did you mean password_hash_file?)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse("cfg.yaml", []byte(strings.ReplaceAll(tt.src, "HASH", testHash)), dir)
			if got := errLines(err); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("problems:\n got %q\nwant %q", got, tt.want)
			}
			if err != nil {
				return
			}
			if c.Listen.Admin != tt.addr || c.AdminLoopback() != tt.loopback {
				t.Errorf("listen.admin %q (loopback %v), want %q (%v)", c.Listen.Admin, c.AdminLoopback(), tt.addr, tt.loopback)
			}
			if tt.addr != "" && c.Admin.PasswordHash != testHash {
				t.Errorf("password hash %q, want the test hash", c.Admin.PasswordHash)
			}
		})
	}
}

// TestAdminProblemLine: the refusal of a page without a password names
// the line and says what to run.
func TestAdminProblemLine(t *testing.T) {
	_, err := parseString(t, strings.Replace(minimal, "  pop3: 127.0.0.1:1110\n", "  pop3: 127.0.0.1:1110\n  admin: 8025\n", 1))
	want := "cfg.yaml:4: listen.admin: needs an admin password: run popbridge hash-password and put the hash in admin.password_hash"
	if fmt.Sprint(err) != want {
		t.Errorf("got %q\nwant %q", err, want)
	}
}
