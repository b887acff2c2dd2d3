package main_test

// End-to-end tests: real POP3 clients (curl, fetchmail, getmail6, Python's
// poplib) against the built popbridge binary, which serves Maildirs
// holding the edge-case corpus of internal/testcorpus. Every message a
// client downloads is compared with the stored file.
//
// A missing client skips its test, or fails it when CI=true: CI must show
// that the real clients ran. Each test logs an "e2e: ..." line saying what
// it verified, so that `go test -v` output shows it.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/freeport"
	"github.com/popbridge/popbridge/internal/testcert"
	"github.com/popbridge/popbridge/internal/testcorpus"
	"github.com/popbridge/popbridge/internal/testpeer"
)

// TestE2E builds popbridge once and runs each real client against it in
// a subtest of its own, each with its own server and Maildirs.
func TestE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end tests skipped in -short mode")
	}
	bin := buildPopbridge(t)
	t.Run("curl", func(t *testing.T) { t.Parallel(); testCurl(t, bin) })
	t.Run("curl-tls", func(t *testing.T) { t.Parallel(); testCurlTLS(t, bin) })
	t.Run("fetchmail", func(t *testing.T) { t.Parallel(); testFetchmail(t, bin, newAccount(t, "alice", "remove")) })
	t.Run("fetchmail-gmail", func(t *testing.T) { t.Parallel(); testFetchmail(t, bin, newGmailAccount(t, "alice", "archive")) })
	t.Run("getmail", func(t *testing.T) { t.Parallel(); testGetmail(t, bin, newAccount(t, "alice", "remove")) })
	t.Run("getmail-gmail", func(t *testing.T) { t.Parallel(); testGetmail(t, bin, newGmailAccount(t, "alice", "archive")) })
	t.Run("poplib", func(t *testing.T) { t.Parallel(); testPoplib(t, bin) })
	t.Run("demo", func(t *testing.T) { t.Parallel(); testDemo(t, bin) })
	t.Run("graph", func(t *testing.T) { t.Parallel(); testGraph(t, bin) })
}

// ---------------------------------------------------------------------
// Clients

// testCurl lists the maildrop with curl and retrieves every message.
func testCurl(t *testing.T, bin string) {
	curl := need(t, "curl", "curl")
	alice := newAccount(t, "alice", "remove")
	srv := startPopbridge(t, bin, serverOptions{accounts: []*account{alice}})
	base := fmt.Sprintf("pop3://%s:%s@%s/", alice.user, alice.pass, srv.addr)

	// The URL without a message number sends LIST.
	list := run(t, curl, "-sS", base)
	if got, want := string(list), wantList(alice.corpus); got != want {
		t.Fatalf("curl LIST:\n%s\nwant\n%s", got, want)
	}
	uidl := run(t, curl, "-sS", "-X", "UIDL", base)
	if got, want := string(uidl), wantUIDL(alice.corpus); got != want {
		t.Fatalf("curl UIDL:\n%s\nwant\n%s", got, want)
	}
	octets := 0
	for i, m := range alice.corpus {
		got := run(t, curl, "-sS", base+strconv.Itoa(i+1))
		// curl removes the dot-stuffing and the terminating ".\r\n"
		// and keeps the CRLF before the "." (its end-of-body matcher
		// looks for CRLF "." CRLF and writes that first CRLF out as part
		// of the message), so it prints the CRLF the server adds after
		// a last line without a line end. The matcher starts as if a
		// CRLF had just been received, so for an empty message curl
		// prints one CRLF: it cannot tell an empty message from one
		// holding a single empty line.
		want := received(m.Data)
		if len(want) == 0 {
			want = []byte("\r\n")
		}
		sameBytes(t, "curl RETR "+m.Name, got, want)
		octets += len(got)
	}
	// TOP n 0: the header and the blank line after it.
	top := run(t, curl, "-sS", "-X", "TOP 1 0", base)
	sameBytes(t, "curl TOP 1 0", top, headerPart(received(alice.corpus[0].Data)))
	if t.Failed() {
		return
	}
	t.Logf("e2e: curl fetched %d messages (%d octets) identical to source, LIST/UIDL/TOP as expected", len(alice.corpus), octets)
}

// testCurlTLS checks STLS and implicit TLS with curl, verifying the
// server certificate for the name localhost, on a server that refuses
// logins without TLS (cleartext_auth: never).
func testCurlTLS(t *testing.T, bin string) {
	curl := need(t, "curl", "curl")
	alice := newAccount(t, "alice", "remove")
	srv := startPopbridge(t, bin, serverOptions{accounts: []*account{alice}, tls: true, cleartext: "never"})
	_, port, _ := net.SplitHostPort(srv.addr)
	_, tlsPort, _ := net.SplitHostPort(srv.addrTLS)
	resolve := func(port string) string { return "localhost:" + port + ":127.0.0.1" }

	// Without TLS the login is refused (curl exit 67: login denied).
	plain := fmt.Sprintf("pop3://%s:%s@%s/", alice.user, alice.pass, srv.addr)
	out, err := exec.Command(curl, "-sS", plain).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 67 {
		t.Fatalf("curl without TLS: %v (want exit status 67, login denied); output:\n%s", err, out)
	}

	for _, mode := range []struct {
		name   string
		scheme string
		port   string
		flags  []string
	}{
		{"STLS", "pop3", port, []string{"--ssl-reqd"}},
		{"pop3s", "pop3s", tlsPort, nil},
	} {
		base := fmt.Sprintf("%s://%s:%s@localhost:%s/", mode.scheme, alice.user, alice.pass, mode.port)
		args := append([]string{"-sS", "--cacert", srv.certFile, "--resolve", resolve(mode.port)}, mode.flags...)
		list := run(t, curl, append(args, base)...)
		if got, want := string(list), wantList(alice.corpus); got != want {
			t.Fatalf("curl %s LIST:\n%s\nwant\n%s", mode.name, got, want)
		}
		for i, m := range alice.corpus {
			got := run(t, curl, append(args, base+strconv.Itoa(i+1))...)
			want := received(m.Data)
			if len(want) == 0 {
				want = []byte("\r\n") // see testCurl
			}
			sameBytes(t, fmt.Sprintf("curl %s RETR %s", mode.name, m.Name), got, want)
		}
	}

	// A client that does not know the certificate refuses it (curl exit
	// 60: peer certificate cannot be authenticated).
	out, err = exec.Command(curl, "-sS", "--resolve", resolve(tlsPort),
		fmt.Sprintf("pop3s://%s:%s@localhost:%s/", alice.user, alice.pass, tlsPort)).CombinedOutput()
	if !errors.As(err, &ee) || ee.ExitCode() != 60 {
		t.Errorf("curl pop3s without --cacert: %v (want exit status 60); output:\n%s", err, out)
	}
	if t.Failed() {
		return
	}
	t.Logf("e2e: curl over STLS (--ssl-reqd) and pop3s fetched %d messages each identical to source; "+
		"certificate verified for localhost; login without TLS refused", len(alice.corpus))
}

// testFetchmail runs fetchmail twice in keep mode with UIDL tracking: the
// first run delivers every message, the second none.
func testFetchmail(t *testing.T, bin string, alice *account) {
	fetchmail := need(t, "fetchmail", "fetchmail")
	srv := startPopbridge(t, bin, serverOptions{accounts: []*account{alice}, tls: true})
	_, port, _ := net.SplitHostPort(srv.addr)

	dir := t.TempDir()
	// The MDA writes each message to a file of its own, numbered in
	// delivery order. fetchmail runs it with /bin/sh -c and replaces only
	// %F and %T in it, which it does not contain.
	deliver := filepath.Join(dir, "deliver.sh")
	writeFile(t, deliver, 0o700, `#!/bin/sh
set -e
n=$(ls "$1" | wc -l)
exec cat > "$1/msg-$(printf %04d "$n")"
`)
	// fetch runs fetchmail with the poll options given, delivering into
	// out, and returns its exit status: 0 mail delivered, 1 no mail.
	// set invisible: no Received header; no envelope: no envelope
	// lookup; no rewrite: addresses in headers are left alone; keep and
	// uidl: nothing deleted, UIDs remembered in idfile. With an MDA
	// fetchmail strips CR (stripcr defaults on): the files have LF line
	// ends.
	fetch := func(tlsOptions, idfile, out string) (int, string) {
		t.Helper()
		if err := os.MkdirAll(out, 0o700); err != nil {
			t.Fatal(err)
		}
		rc := filepath.Join(dir, "fetchmailrc")
		writeFile(t, rc, 0o600, fmt.Sprintf(`set invisible
poll localhost via 127.0.0.1 service %s protocol pop3 uidl auth password no envelope
  user %q there with password %q is root here
  keep no rewrite %s
  mda "/bin/sh %s %s"
`, port, alice.user, alice.pass, tlsOptions, deliver, out))
		// --pidfile: as root the lock is /var/run/fetchmail.pid, shared
		// by the tests running fetchmail in parallel.
		cmd := exec.Command(fetchmail, "-f", rc, "--idfile", idfile, "--pidfile", filepath.Join(dir, "fetchmail.pid"),
			"--nodetach", "--nosyslog", "-v")
		cmd.Env = append(os.Environ(), "FETCHMAILHOME="+dir, "HOME="+dir)
		outb, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, string(outb)
		case errors.As(err, &ee):
			return ee.ExitCode(), string(outb)
		}
		t.Fatalf("fetchmail: %v\n%s", err, outb)
		return 0, ""
	}
	check := func(label, out, idfile string) {
		t.Helper()
		files := readDirFiles(t, out)
		if len(files) != len(alice.corpus) {
			t.Fatalf("%s delivered %d messages, want %d", label, len(files), len(alice.corpus))
		}
		for i, m := range alice.corpus {
			// What fetchmail delivers is what the server sent, unstuffed,
			// with LF line ends and nothing added, except that it ends a
			// header without a body with an empty line and replaces a
			// message without any header by a notice of its own.
			want := lf(received(m.Data))
			switch {
			case len(want) == 0:
				if !bytes.HasPrefix(files[i], []byte("From: FETCHMAIL-DAEMON\n")) || !bytes.Contains(files[i], []byte("Headerless mail")) {
					t.Errorf("%s %s: got %q, want fetchmail's headerless-mail notice", label, m.Name, clip(files[i]))
				}
				continue
			case !bytes.HasPrefix(want, []byte("\n")) && !bytes.Contains(want, []byte("\n\n")):
				want = append(want, '\n')
			}
			sameBytes(t, label+" "+m.Name, files[i], want)
		}
		ids, _ := os.ReadFile(idfile)
		for _, m := range alice.corpus {
			if !bytes.Contains(ids, []byte(" "+m.Unique+"\n")) {
				t.Errorf("%s: idfile lacks UID %s:\n%s", label, m.Unique, ids)
			}
		}
	}

	// In the clear (allowed from loopback); sslproto "": no STLS.
	idfile, out := filepath.Join(dir, "ids-plain"), filepath.Join(dir, "out-plain")
	if code, log := fetch(`sslproto ""`, idfile, out); code != 0 {
		t.Fatalf("first fetchmail run: exit status %d\n%s", code, log)
	}
	check("fetchmail", out, idfile)
	if code, log := fetch(`sslproto ""`, idfile, out); code != 1 {
		t.Fatalf("second fetchmail run: exit status %d, want 1 (no new mail)\n%s", code, log)
	}
	if n := len(readDirFiles(t, out)); n != len(alice.corpus) {
		t.Fatalf("second fetchmail run delivered %d more messages, want 0", n-len(alice.corpus))
	}

	// Over STLS, checking the certificate for the name localhost, with
	// a fresh idfile: everything again.
	idfile, out = filepath.Join(dir, "ids-stls"), filepath.Join(dir, "out-stls")
	stls := fmt.Sprintf(`sslproto "tls1.2+" sslcertck sslcertfile %q sslcommonname "localhost"`, srv.certFile)
	if code, log := fetch(stls, idfile, out); code != 0 {
		t.Fatalf("fetchmail over STLS: exit status %d\n%s", code, log)
	}
	check("fetchmail STLS", out, idfile)
	if n := srv.logins(t, alice.user, true); n != 1 {
		t.Errorf("popbridge logged %d TLS logins of %s, want 1 (fetchmail over STLS)", n, alice.user)
	}

	// keep: everything is still in the Maildir, or in Gmail's INBOX.
	alice.checkUntouched(t, "after fetchmail keep")
	if t.Failed() {
		return
	}
	t.Logf("e2e: fetchmail (keep, uidl) fetched %d messages identical to source%s, in the clear and over STLS "+
		"with certificate check; a second run fetched none", len(alice.corpus), alice.from())
}

// testGetmail runs getmail6 twice (read_all = false, delete = false) into
// a Maildir: the first run delivers every message, the second none.
func testGetmail(t *testing.T, bin string, alice *account) {
	getmail := need(t, "getmail", "getmail6")
	python := need(t, "python3", "python3")
	srv := startPopbridge(t, bin, serverOptions{accounts: []*account{alice}})
	_, port, _ := net.SplitHostPort(srv.addr)

	// getmail refuses to deliver as root: run it as an unprivileged user
	// in a directory that user owns.
	dir, cred := unprivilegedDir(t)
	dest := filepath.Join(dir, "Maildir")
	for _, sub := range []string{"", "cur", "new", "tmp"} {
		if err := os.Mkdir(filepath.Join(dest, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	rc := filepath.Join(dir, "getmailrc")
	writeFile(t, rc, 0o600, fmt.Sprintf(`[retriever]
type = SimplePOP3Retriever
server = 127.0.0.1
port = %s
username = %s
password = %s
timeout = 20

[destination]
type = Maildir
path = %s/

[options]
read_all = false
delete = false
delivered_to = false
received = false
verbose = 1
`, port, alice.user, alice.pass, dest))
	chownTree(t, dir, cred)

	fetch := func() string {
		// getmail installs its SIGCHLD handler after fork (getmailcore
		// baseclasses.py, forkchild): a delivery child that exits first
		// leaves it waiting for the timeout, then it stops with "waiting
		// child pid N timed out". That message was delivered but not
		// recorded, so a rerun delivers it again; duplicates are removed.
		for attempt := 1; ; attempt++ {
			cmd := exec.Command(getmail, "--getmaildir", dir, "--rcfile", rc)
			cmd.Env = append(os.Environ(), "HOME="+dir)
			if cred != nil {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
			}
			out, err := cmd.CombinedOutput()
			if err != nil && attempt < 4 && bytes.Contains(out, []byte("waiting child pid")) {
				t.Logf("getmail lost its delivery child's SIGCHLD (a getmail race), running it again")
				removeDuplicateFiles(t, filepath.Join(dest, "new"))
				continue
			}
			if err != nil {
				t.Fatalf("getmail: %v\n%s", err, out)
			}
			removeDuplicateFiles(t, filepath.Join(dest, "new"))
			return string(out)
		}
	}
	log := fetch()
	got := readDirFiles(t, filepath.Join(dest, "new"))
	if len(got) != len(alice.corpus) {
		t.Fatalf("first getmail run delivered %d messages, want %d\n%s", len(got), len(alice.corpus), log)
	}
	// getmail parses each message with Python's email package and writes
	// it out again; the destination's file names do not keep the order,
	// so each delivered file is matched with its source by what Python's
	// email package makes of the bytes the server should have sent.
	want := getmailExpect(t, python, alice.corpus)
	remaining := slices.Clone(got)
	verbatim := 0 // messages delivered exactly as stored (LF line ends)
	for i, m := range alice.corpus {
		j := slices.IndexFunc(remaining, func(b []byte) bool { return bytes.Equal(b, want[i]) })
		if j < 0 {
			t.Errorf("getmail: no delivered file matches %s; want\n%q", m.Name, clip(want[i]))
			continue
		}
		if bytes.Equal(remaining[j], lf(received(m.Data))) {
			verbatim++
		}
		remaining = slices.Delete(remaining, j, j+1)
	}
	for _, b := range remaining {
		t.Errorf("getmail: unexpected delivered message:\n%q", clip(b))
	}

	log = fetch()
	if n := len(readDirFiles(t, filepath.Join(dest, "new"))); n != len(alice.corpus) {
		t.Fatalf("second getmail run delivered %d more messages, want 0\n%s", n-len(alice.corpus), log)
	}
	if !strings.Contains(log, "0 messages") {
		t.Errorf("second getmail run: want \"0 messages ... retrieved\" in\n%s", log)
	}
	alice.checkUntouched(t, "after getmail delete = false")
	if t.Failed() {
		return
	}
	t.Logf("e2e: getmail6 fetched %d messages identical to source%s after Python email re-serialisation "+
		"(%d of them byte for byte); second run fetched none", len(alice.corpus), alice.from(), verbatim)
}

// getmailExpectScript writes, for each message read from the JSON list
// on standard input (base64 of the octets a POP3 client receives), what
// getmail6 writes to a Maildir with delivered_to and received off: a
// Return-Path line (its existing ones removed), then the message as
// Python's email package parses and flattens it with LF line ends
// (getmailcore/message.py, Message.flatten). That flattening may refold
// long header fields; a server that sent other octets would almost
// always produce another result.
const getmailExpectScript = `
import base64, email.parser, json, sys
def address_no_brackets(addr):  # getmailcore/utilities.py
    parts = str(addr).split("<")
    return parts[1].split(">")[0] if len(parts) > 1 else str(addr)
out = []
for b64 in json.load(sys.stdin):
    raw = base64.b64decode(b64)
    # poplib's RETR lines, joined as getmail's POP3 retriever does:
    # Message(fromlines=lines+[b""]) joins them with os.linesep.
    lines = raw.split(b"\r\n")
    if lines[-1] == b"":
        lines.pop()
    msg = email.parser.BytesParser().parsebytes(b"\n".join(lines + [b""]))
    sender = address_no_brackets(msg["Return-Path"] or msg["Sender"] or "unknown")
    del msg["Return-Path"]
    body = msg.as_bytes(policy=msg.policy.clone(linesep="\n"))
    out.append(base64.b64encode(("Return-Path: <%s>\n" % sender).encode() + body).decode())
json.dump(out, sys.stdout)
`

// getmailExpect returns what getmail should deliver for each message.
func getmailExpect(t *testing.T, python string, corpus []testcorpus.CorpusMessage) [][]byte {
	var in []string
	for _, m := range corpus {
		in = append(in, base64.StdEncoding.EncodeToString(received(m.Data)))
	}
	stdin, _ := json.Marshal(in)
	cmd := exec.Command(python, "-c", getmailExpectScript)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3 (getmail expectation): %v", err)
	}
	var res []string
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	var want [][]byte
	for _, s := range res {
		b, _ := base64.StdEncoding.DecodeString(s)
		want = append(want, b)
	}
	return want
}

// poplibScript is a POP3 session with Python's poplib: CAPA, STAT, LIST,
// UIDL, RETR and TOP n 0 of every message, DELE of the messages whose
// UIDs are given, STAT and RETR of each deleted message again (which must
// fail), QUIT. It prints the results as JSON.
const poplibScript = `
import base64, json, poplib, sys
poplib._MAXLINE = 1 << 20  # the default 2048 rejects the corpus's long lines
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
dele = set(sys.argv[5:])
p = poplib.POP3(host, port, timeout=30)
res = {"welcome": p.getwelcome().decode()}
res["capa"] = sorted(p.capa().keys())
p.user(user)
p.pass_(password)
res["stat"] = list(p.stat())
res["list"] = [l.decode() for l in p.list()[1]]
res["uidl"] = [l.decode() for l in p.uidl()[1]]
res["retr"], res["top"], res["dele"] = {}, {}, []
for line in res["uidl"]:
    num, uid = line.split(" ", 1)
    resp, lines, octets = p.retr(int(num))
    res["retr"][uid] = base64.b64encode(b"".join(l + b"\r\n" for l in lines)).decode()
    resp, lines, octets = p.top(int(num), 0)
    res["top"][uid] = base64.b64encode(b"".join(l + b"\r\n" for l in lines)).decode()
    if uid in dele:
        res["dele"].append(p.dele(int(num)).decode())
res["stat_after_dele"] = list(p.stat())
res["retr_deleted"] = []
for line in res["uidl"]:
    num, uid = line.split(" ", 1)
    if uid in dele:
        try:
            p.retr(int(num))
            res["retr_deleted"].append("+OK")
        except poplib.error_proto as e:
            res["retr_deleted"].append(e.args[0].decode())
res["quit"] = p.quit().decode()
json.dump(res, sys.stdout)
`

type poplibResult struct {
	Welcome string
	Capa    []string
	Stat    []int64
	List    []string
	UIDL    []string
	Retr    map[string]string
	Top     map[string]string
	Dele    []string
	Quit    string

	StatAfterDele []int64  `json:"stat_after_dele"`
	RetrDeleted   []string `json:"retr_deleted"`
}

// poplibSession runs poplibScript against addr and returns its results.
func poplibSession(t *testing.T, python, addr string, a *account, dele ...string) poplibResult {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	args := append([]string{"-c", poplibScript, host, port, a.user, a.pass}, dele...)
	cmd := exec.Command(python, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3 poplib session: %v\n%s", err, stderr.Bytes())
	}
	var r poplibResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("poplib output: %v\n%s", err, out)
	}
	return r
}

// checkPoplib compares a poplib session's view with the messages of
// corpus that are still visible.
func checkPoplib(t *testing.T, label string, r poplibResult, visible []testcorpus.CorpusMessage) {
	t.Helper()
	size := totalSize(visible)
	if len(r.Stat) != 2 || r.Stat[0] != int64(len(visible)) || r.Stat[1] != size {
		t.Errorf("%s: STAT %v, want [%d %d]", label, r.Stat, len(visible), size)
	}
	if got, want := strings.Join(r.List, "\r\n")+"\r\n", wantList(visible); len(visible) > 0 && got != want {
		t.Errorf("%s: LIST\n%s\nwant\n%s", label, got, want)
	}
	if got, want := strings.Join(r.UIDL, "\r\n")+"\r\n", wantUIDL(visible); len(visible) > 0 && got != want {
		t.Errorf("%s: UIDL\n%s\nwant\n%s", label, got, want)
	}
	for _, m := range visible {
		// poplib removes the dot-stuffing and returns the lines without
		// their CRLF; joined with CRLF they are what the server sent.
		got, _ := base64.StdEncoding.DecodeString(r.Retr[m.Unique])
		sameBytes(t, label+" RETR "+m.Name, got, received(m.Data))
		top, _ := base64.StdEncoding.DecodeString(r.Top[m.Unique])
		sameBytes(t, label+" TOP 0 "+m.Name, top, headerPart(received(m.Data)))
	}
	if !strings.HasPrefix(r.Quit, "+OK") {
		t.Errorf("%s: QUIT answered %q", label, r.Quit)
	}
}

// testPoplib runs poplib sessions against two accounts, one with each
// delete policy: one message is deleted in each, then a second session
// (after a restart of the server) must not see it; the remove policy
// unlinks the file, the keep policy leaves it in place.
func testPoplib(t *testing.T, bin string) {
	python := need(t, "python3", "python3")
	alice := newAccount(t, "alice", "remove")
	bob := newAccount(t, "bob", "keep")
	carol := newGmailAccount(t, "carol", "archive")
	srv := startPopbridge(t, bin, serverOptions{accounts: []*account{alice, bob, carol}})

	const victim = 1 // the dot-lines message
	for _, a := range []*account{alice, bob, carol} {
		r := poplibSession(t, python, srv.addr, a, a.corpus[victim].Unique)
		for _, c := range []string{"TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING"} {
			if !slices.Contains(r.Capa, c) {
				t.Errorf("%s: CAPA %v lacks %s", a.user, r.Capa, c)
			}
		}
		if strings.Contains(r.Welcome, "<") {
			t.Errorf("%s: greeting %q offers APOP", a.user, r.Welcome)
		}
		checkPoplib(t, a.user, r, a.corpus)
		if len(r.Dele) != 1 || !strings.HasPrefix(r.Dele[0], "+OK") {
			t.Errorf("%s: DELE answered %q", a.user, r.Dele)
		}
		// A deleted message is gone from STAT and cannot be retrieved.
		visible := slices.Delete(slices.Clone(a.corpus), victim, victim+1)
		n, size := int64(len(visible)), totalSize(visible)
		if len(r.StatAfterDele) != 2 || r.StatAfterDele[0] != n || r.StatAfterDele[1] != size {
			t.Errorf("%s: STAT after DELE %v, want [%d %d]", a.user, r.StatAfterDele, n, size)
		}
		if len(r.RetrDeleted) != 1 || !strings.HasPrefix(r.RetrDeleted[0], "-ERR") {
			t.Errorf("%s: RETR of a deleted message answered %q, want -ERR", a.user, r.RetrDeleted)
		}
	}
	if t.Failed() {
		return
	}
	_, err := os.Stat(alice.corpus[victim].Path)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("on_delete remove: %s still there after DELE+QUIT (%v)", alice.corpus[victim].Path, err)
	}
	if _, err := os.Stat(bob.corpus[victim].Path); err != nil {
		t.Errorf("on_delete keep: the file of the deleted message is gone: %v", err)
	}
	if m, _ := carol.gmail.Message(carol.corpus[victim].Unique); !slices.Equal(m.Labels, []string{"UNREAD"}) {
		t.Errorf("gmail on_delete archive: the deleted message has labels %v, want INBOX removed", m.Labels)
	}

	// The keep policy remembers hidden messages across restarts.
	srv.restart(t)
	for _, a := range []*account{alice, bob, carol} {
		visible := slices.Delete(slices.Clone(a.corpus), victim, victim+1)
		r := poplibSession(t, python, srv.addr, a)
		checkPoplib(t, a.user+" (second session)", r, visible)
	}
	if t.Failed() {
		return
	}
	t.Logf("e2e: python poplib fetched %d messages identical to source (STAT, LIST, UIDL, RETR, TOP 0) from Maildirs "+
		"and a fake Gmail API; a DELEted message vanished from STAT and RETR got -ERR; DELE+QUIT removed the file (on_delete remove), "+
		"hid it across a restart (on_delete keep) or archived it in Gmail", len(alice.corpus))
}

// testDemo runs `popbridge demo` as a new user would, in an empty
// directory, and fetches the first message with the curl command it
// prints.
func testDemo(t *testing.T, bin string) {
	curl := need(t, "curl", "curl")
	dir := t.TempDir()
	args := []string{"demo"}
	// The demo listens on 127.0.0.1:1110; if that port is taken here,
	// use another one.
	if l, err := net.Listen("tcp", "127.0.0.1:1110"); err != nil {
		args = append(args, "-listen", "127.0.0.1:"+strconv.Itoa(freePort(t)))
	} else {
		l.Close()
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop := stopOnCleanup(t, cmd, stderr)

	// The demo prints the command to try; run exactly that.
	re := regexp.MustCompile(`curl (pop3://demo:demo@127\.0\.0\.1:\d+/1)\n`)
	var url string
	deadline := time.Now().Add(20 * time.Second)
	for url == "" {
		if m := re.FindStringSubmatch(stdout.String()); m != nil {
			url = m[1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("popbridge demo printed no curl command in 20 s; stdout:\n%s\nstderr:\n%s", stdout, stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(args) == 1 && !strings.Contains(url, ":1110/") {
		t.Errorf("demo URL %s, want port 1110", url)
	}
	got := run(t, curl, "-sS", url)

	// The message is the first file of the sample Maildir, in name order.
	var names []string
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, "popbridge-demo", "Maildir", sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			names = append(names, filepath.Join(sub, e.Name()))
		}
	}
	if len(names) == 0 {
		t.Fatalf("demo Maildir is empty")
	}
	slices.SortFunc(names, func(a, b string) int { return strings.Compare(filepath.Base(a), filepath.Base(b)) })
	src, err := os.ReadFile(filepath.Join(dir, "popbridge-demo", "Maildir", names[0]))
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "demo message 1", got, received(src))
	if !bytes.Contains(got, []byte("\r\nSubject: ")) {
		t.Errorf("demo message 1 has no Subject header:\n%s", got)
	}
	if code := stop(); code != 0 {
		t.Errorf("popbridge demo exited with status %d after SIGTERM; stderr:\n%s", code, stderr)
	}
	if t.Failed() {
		return
	}
	t.Logf("e2e: popbridge demo served %d messages; `curl %s` printed message 1 (%d octets) identical to its file", len(names), url, len(got))
}

// ---------------------------------------------------------------------
// The popbridge process

// buildPopbridge builds the binary from this package's source into a
// temporary directory of the test and returns its path.
func buildPopbridge(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	// go test puts its own GOROOT/bin first on PATH.
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH: %v", err)
	}
	bin := filepath.Join(dir, "popbridge")
	// -buildvcs=false: the version does not matter here, and VCS
	// stamping fails in a checkout owned by another user than the one
	// running the tests (git rejects it as "dubious ownership").
	cmd := exec.Command(goTool, "build", "-buildvcs=false", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// account is one configured account and the corpus in its Maildir, or
// in a fake Gmail's INBOX.
type account struct {
	user, pass string
	hash       string
	maildir    string
	onDelete   string
	corpus     []testcorpus.CorpusMessage
	gmail      *gmailtest.Server // the mailbox of a gmail account
	oauth      *oauthtest.Server // its token endpoint
}

// newGmailAccount makes a gmail account whose fake Gmail INBOX holds the
// corpus, in order; each message's Unique is its Gmail id (the UIDL).
// Every other message is sent unpadded.
func newGmailAccount(t *testing.T, user, onDelete string) *account {
	t.Helper()
	a := newAccount(t, user, onDelete)
	a.oauth = oauthtest.Start(t)
	a.oauth.AddRefreshToken("rt-" + user)
	a.gmail = gmailtest.Start(t)
	a.gmail.SetValidToken(a.oauth.ValidAccess)
	for i := range a.corpus {
		a.corpus[i].Unique = a.gmail.Add(a.corpus[i].Data, "INBOX", "UNREAD")
		a.gmail.SetUnpadded(a.corpus[i].Unique, i%2 == 1)
	}
	return a
}

// from says where the account's mail comes from, for log lines.
func (a *account) from() string {
	if a.gmail != nil {
		return " (from a fake Gmail API, OAuth2 refresh through a fake token endpoint)"
	}
	return ""
}

// checkUntouched checks that the source still holds every message.
func (a *account) checkUntouched(t *testing.T, when string) {
	t.Helper()
	for _, m := range a.corpus {
		if a.gmail != nil {
			if g, ok := a.gmail.Message(m.Unique); !ok || !slices.Equal(g.Labels, []string{"INBOX", "UNREAD"}) {
				t.Errorf("%s: Gmail message %s is %+v", when, m.Unique, g.Labels)
			}
		} else if _, err := os.Stat(m.Path); err != nil {
			t.Errorf("%s: %v", when, err)
		}
	}
}

// newAccount makes an account whose Maildir holds the corpus.
func newAccount(t *testing.T, user, onDelete string) *account {
	t.Helper()
	a := &account{user: user, pass: user + "-e2e-Pw.7q", onDelete: onDelete}
	hash, err := bcrypt.GenerateFromPassword([]byte(a.pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	a.hash = string(hash)
	a.maildir = filepath.Join(t.TempDir(), user, "Maildir")
	if a.corpus, err = testcorpus.WriteCorpus(a.maildir); err != nil {
		t.Fatal(err)
	}
	return a
}

type serverOptions struct {
	accounts  []*account
	tls       bool   // a certificate, STLS and a pop3s listener
	cleartext string // cleartext_auth; empty = the default (loopback)
}

// popbridge is a running `popbridge serve`.
type popbridge struct {
	bin      string
	dir      string // holds the configuration file
	config   string
	addr     string // plain POP3
	addrTLS  string // pop3s, with tls
	certFile string // the server certificate, with tls
	secrets  []string
	stderr   *syncBuffer
	stop     func() int
}

// startPopbridge writes a configuration for opts and runs
// `popbridge serve -config FILE` until the test ends.
func startPopbridge(t *testing.T, bin string, opts serverOptions) *popbridge {
	t.Helper()
	p := &popbridge{bin: bin, dir: t.TempDir()}
	p.config = filepath.Join(p.dir, "popbridge.yaml")
	p.addr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "# popbridge e2e test\nlisten:\n  pop3: %s\n", p.addr)
	if opts.tls {
		p.addrTLS = "127.0.0.1:" + strconv.Itoa(freePort(t))
		cert := testcert.New(t) // DNS SAN localhost
		certPEM, keyPEM := cert.CertPEM, cert.KeyPEM
		p.certFile = filepath.Join(p.dir, "cert.pem")
		writeFile(t, p.certFile, 0o644, string(certPEM))
		writeFile(t, filepath.Join(p.dir, "key.pem"), 0o600, string(keyPEM))
		// Relative paths: relative to the configuration file.
		fmt.Fprintf(&cfg, "  pop3s: %s\ntls:\n  cert_file: cert.pem\n  key_file: key.pem\n", p.addrTLS)
	}
	if opts.cleartext != "" {
		fmt.Fprintf(&cfg, "cleartext_auth: %s\n", opts.cleartext)
	}
	fmt.Fprintf(&cfg, "state_dir: state\nlog: {level: debug, format: json}\naccounts:\n")
	for _, a := range opts.accounts {
		p.secrets = append(p.secrets, a.pass)
		if a.gmail == nil {
			fmt.Fprintf(&cfg, "  - user: %s\n    password_hash: %q\n    backend:\n      type: maildir\n      path: %q\n      on_delete: %s\n",
				a.user, a.hash, a.maildir, a.onDelete)
			continue
		}
		fmt.Fprintf(&cfg, `  - user: %s
    password_hash: %q
    backend:
      type: gmail
      api_endpoint: %s
      on_delete: %s
      oauth2:
        provider: custom
        client_id: %s
        auth_url: %s
        token_url: %s
        scopes: [https://www.googleapis.com/auth/gmail.modify]
`, a.user, a.hash, a.gmail.Endpoint(), a.onDelete, a.oauth.ClientID, a.oauth.AuthURL, a.oauth.TokenURL)
		// What popbridge auth would have stored.
		store := &oauth.Store{Dir: filepath.Join(p.dir, "state", "tokens")}
		if err := store.Save(a.user, &oauth2.Token{RefreshToken: "rt-" + a.user}); err != nil {
			t.Fatal(err)
		}
		p.secrets = append(p.secrets, "rt-"+a.user)
	}
	writeFile(t, p.config, 0o600, cfg.String())
	p.stderr = &syncBuffer{}
	p.start(t)
	t.Cleanup(func() {
		if code := p.stop(); code != 0 {
			t.Errorf("popbridge serve exited with status %d after SIGTERM", code)
		}
		for _, s := range p.secrets {
			if strings.Contains(p.stderr.String(), s) {
				t.Errorf("a password appears in the popbridge log")
			}
		}
		if t.Failed() {
			t.Logf("popbridge configuration:\n%s\npopbridge log:\n%s", cfg.String(), tail(p.stderr.String(), 16<<10))
		}
	})
	return p
}

// start runs the server and waits until it greets on every listener.
func (p *popbridge) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(p.bin, "serve", "-config", p.config)
	cmd.Stdout, cmd.Stderr = p.stderr, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.stop = stopOnCleanup(t, cmd, nil)
	waitGreeting(t, p.addr, false, p.stderr)
	if p.addrTLS != "" {
		waitGreeting(t, p.addrTLS, true, p.stderr)
	}
}

// logins counts the logins of user in the server's log, with TLS or
// without.
func (p *popbridge) logins(t *testing.T, user string, withTLS bool) int {
	t.Helper()
	n := 0
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		var e struct {
			Message string
			User    string
			TLS     bool
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Message == "logged in" && e.User == user && e.TLS == withTLS {
			n++
		}
	}
	return n
}

// restart stops the server gracefully and starts it again.
func (p *popbridge) restart(t *testing.T) {
	t.Helper()
	if code := p.stop(); code != 0 {
		t.Fatalf("popbridge serve exited with status %d after SIGTERM:\n%s", code, p.stderr)
	}
	p.start(t)
}

// stopOnCleanup returns a function that stops cmd with SIGTERM and
// returns its exit status; it runs in t.Cleanup too (a no-op if called
// already), and then prints log, if not nil, when the test failed.
func stopOnCleanup(t *testing.T, cmd *exec.Cmd, log *syncBuffer) func() int {
	var once sync.Once
	code := -1
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop := func() int {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				<-done
			}
			code = cmd.ProcessState.ExitCode()
		})
		return code
	}
	t.Cleanup(func() {
		stop()
		if log != nil && t.Failed() {
			t.Logf("popbridge output (%s):\n%s", strings.Join(cmd.Args, " "), tail(log.String(), 16<<10))
		}
	})
	return stop
}

// waitGreeting polls addr until the server sends its +OK greeting.
func waitGreeting(t *testing.T, addr string, useTLS bool, log *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			if useTLS {
				// Any certificate: this only waits for the listener.
				c = tls.Client(c, &tls.Config{InsecureSkipVerify: true})
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			var line string
			line, err = bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err == nil && strings.HasPrefix(line, "+OK") {
				return
			}
			if err == nil {
				err = fmt.Errorf("greeting %q", line)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("popbridge did not greet on %s within 20 s: %v\n%s", addr, err, log)
}

// freePort returns a free TCP port on 127.0.0.1 (freeport: not one an
// outgoing connection can take before the server binds it).
func freePort(t *testing.T) int { return freeport.Port(t) }

// ---------------------------------------------------------------------
// Expected bytes

var crlf = []byte("\r\n")

// wire returns a stored message as a POP3 server sends it before
// dot-stuffing: every line end (CRLF, LF or a bare CR) as CRLF. Its
// length is the size LIST reports.
func wire(data []byte) []byte {
	s := strings.ReplaceAll(string(data), "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return []byte(strings.ReplaceAll(s, "\n", "\r\n"))
}

// received returns what a client gets for a stored message once it has
// removed the dot-stuffing and the terminating ".\r\n": wire(data), plus
// the CRLF the server must send before the "." when the last line has no
// line end (RFC 1939 §3). An empty message is empty.
func received(data []byte) []byte {
	w := wire(data)
	if len(w) > 0 && !bytes.HasSuffix(w, crlf) {
		w = append(w, crlf...)
	}
	return w
}

// headerPart returns what TOP n 0 sends for a received message: the
// header up to and including the empty line that ends it, or the whole
// message if it has no empty line.
func headerPart(msg []byte) []byte {
	if bytes.HasPrefix(msg, crlf) {
		return msg[:2]
	}
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return msg[:i+4]
	}
	return msg
}

// lf converts CRLF line ends to LF.
func lf(b []byte) []byte { return bytes.ReplaceAll(b, crlf, []byte("\n")) }

// wantList returns the LIST listing of corpus (as curl prints it).
func wantList(corpus []testcorpus.CorpusMessage) string {
	var b strings.Builder
	for i, m := range corpus {
		fmt.Fprintf(&b, "%d %d\r\n", i+1, len(wire(m.Data)))
	}
	return b.String()
}

// totalSize returns the size STAT reports for corpus.
func totalSize(corpus []testcorpus.CorpusMessage) int64 {
	var n int64
	for _, m := range corpus {
		n += int64(len(wire(m.Data)))
	}
	return n
}

// wantUIDL returns the UIDL listing of corpus: the Maildir unique names.
func wantUIDL(corpus []testcorpus.CorpusMessage) string {
	var b strings.Builder
	for i, m := range corpus {
		fmt.Fprintf(&b, "%d %s\r\n", i+1, m.Unique)
	}
	return b.String()
}

// sameBytes reports a difference between got and want with its offset.
func sameBytes(t *testing.T, what string, got, want []byte) bool {
	t.Helper()
	if bytes.Equal(got, want) {
		return true
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	t.Errorf("%s: got %d octets, want %d; first difference at offset %d:\ngot:  %q\nwant: %q",
		what, len(got), len(want), i, around(got, i), around(want, i))
	return false
}

func around(b []byte, i int) []byte {
	lo, hi := max(i-40, 0), min(i+40, len(b))
	return b[lo:hi]
}

func clip(b []byte) []byte {
	if len(b) > 400 {
		return b[:400]
	}
	return b
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// ---------------------------------------------------------------------
// Helpers

// need returns the path of a client program. Without it the test is
// skipped, or fails when CI=true.
func need(t *testing.T, name, pkg string) string {
	t.Helper()
	return testpeer.LookPath(t, name, pkg)
}

// run runs a command and returns its standard output; it fails the test
// on a non-zero exit status.
func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

func writeFile(t *testing.T, path string, mode os.FileMode, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

// readDirFiles returns the contents of the files in dir, by name.
func readDirFiles(t *testing.T, dir string) [][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// unprivilegedDir returns a fresh directory for a program that must not
// run as root, and the credentials to run it with: as root, the user
// nobody, which then owns the directory; otherwise nil (the current user).
func unprivilegedDir(t *testing.T) (string, *syscall.Credential) {
	t.Helper()
	if os.Geteuid() != 0 {
		return t.TempDir(), nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("running as root and no user nobody to run as: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// Under os.TempDir, whose parents are traversable, unlike the 0700
	// directories of t.TempDir.
	dir, err := os.MkdirTemp("", "popbridge-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
}

// chownTree gives dir and everything in it to cred's user.
func chownTree(t *testing.T, dir string, cred *syscall.Credential) {
	t.Helper()
	if cred == nil {
		return
	}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(cred.Uid), int(cred.Gid))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// syncBuffer collects a server's log while the test reads it.
type syncBuffer = dovecottest.SyncBuffer

// removeDuplicateFiles keeps one file of each content in dir.
func removeDuplicateFiles(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(b)] {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		seen[string(b)] = true
	}
}
