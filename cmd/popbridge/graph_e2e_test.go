package main_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/graph"
	"github.com/popbridge/popbridge/backends/graph/graphtest"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/internal/testcorpus"
)

// graphAccount is an account whose fake Graph inbox holds the corpus, in
// order; each message's Unique is the UIDL popbridge derives from its
// immutable id (longer than 70 characters).
type graphAccount struct {
	*account
	fake    *graphtest.Server
	ids     []string // Graph ids, in corpus order
	refresh string   // the refresh token popbridge auth would have stored
	extra   string   // more backend settings, indented
}

func newGraphAccount(t *testing.T, user, extra string) *graphAccount {
	t.Helper()
	a := &graphAccount{account: newAccount(t, user, ""), fake: graphtest.Start(t, graphtest.WithLongIDs()), extra: extra}
	a.refresh = a.fake.Grant()
	for i := range a.corpus {
		id := a.fake.Add("inbox", a.corpus[i].Data)
		a.ids = append(a.ids, id)
		a.corpus[i].Unique = graph.UIDL(id)
	}
	return a
}

// startGraphPopbridge runs `popbridge serve` with the graph accounts, the
// way a user configures them (provider microsoft, tenant consumers, the
// default scopes), the token URL and API endpoint pointing at the fakes,
// and listen.http on httpAddr.
func startGraphPopbridge(t *testing.T, bin, httpAddr string, accts ...*graphAccount) *popbridge {
	t.Helper()
	p := &popbridge{bin: bin, dir: t.TempDir()}
	p.config = filepath.Join(p.dir, "popbridge.yaml")
	p.addr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "listen:\n  pop3: %s\n  http: %s\nstate_dir: state\nlog: {level: debug, format: json}\naccounts:\n", p.addr, httpAddr)
	store := &oauth.Store{Dir: filepath.Join(p.dir, "state", "tokens")}
	for _, a := range accts {
		fmt.Fprintf(&cfg, `  - user: %s
    password_hash: %q
    backend:
      type: graph
      api_endpoint: %s
      oauth2:
        provider: microsoft
        tenant: consumers
        client_id: %s
        token_url: %s
%s`, a.user, a.hash, a.fake.Endpoint(), graphtest.ClientID, a.fake.TokenURL("consumers"), a.extra)
		if err := store.Save(a.user, &oauth2.Token{RefreshToken: a.refresh}); err != nil {
			t.Fatal(err)
		}
		p.secrets = append(p.secrets, a.pass, a.refresh)
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
				t.Errorf("a password or refresh token appears in the popbridge log")
			}
		}
		if t.Failed() {
			t.Logf("popbridge configuration:\n%s\npopbridge log:\n%s", cfg.String(), tail(p.stderr.String(), 16<<10))
		}
	})
	return p
}

// testGraph downloads two fake Graph mailboxes through the binary, each
// twice: Python's poplib on an account with download_once and
// mark_read_on_retr (the second session is empty, the messages stay in
// the inbox, read), and fetchmail without keep on an account with the
// default on_delete (the second run gets nothing, the messages are in
// Deleted Items). Every message is compared with the source.
func testGraph(t *testing.T, bin string) {
	python := need(t, "python3", "python3")
	fetchmail := need(t, "fetchmail", "fetchmail")
	gwen := newGraphAccount(t, "gwen", "      download_once: true\n      mark_read_on_retr: true\n      on_delete: keep\n")
	gus := newGraphAccount(t, "gus", "")
	httpAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	srv := startGraphPopbridge(t, bin, httpAddr, gwen, gus)

	// poplib, download_once: everything, then nothing.
	r := poplibSession(t, python, srv.addr, gwen.account)
	checkPoplib(t, "graph poplib", r, gwen.corpus)
	r = poplibSession(t, python, srv.addr, gwen.account)
	checkPoplib(t, "graph poplib (second session)", r, nil)
	for i, id := range gwen.ids {
		if m, ok := gwen.fake.Message(id); !ok || m.Folder != "inbox" || !m.IsRead {
			t.Errorf("download_once, mark_read_on_retr: %s is %+v, want read in the inbox", gwen.corpus[i].Name, m)
		}
	}

	// fetchmail, no keep: RETR, DELE, QUIT; then nothing.
	dir := t.TempDir()
	deliver := filepath.Join(dir, "deliver.sh")
	writeFile(t, deliver, 0o700, "#!/bin/sh\nset -e\nn=$(ls \"$1\" | wc -l)\nexec cat > \"$1/msg-$(printf %04d \"$n\")\"\n")
	out := filepath.Join(dir, "out")
	if err := os.MkdirAll(out, 0o700); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(srv.addr)
	rc := filepath.Join(dir, "fetchmailrc")
	writeFile(t, rc, 0o600, fmt.Sprintf(`set invisible
poll localhost via 127.0.0.1 service %s protocol pop3 auth password no envelope
  user %q there with password %q is root here
  no rewrite sslproto ""
  mda "/bin/sh %s %s"
`, port, gus.user, gus.pass, deliver, out))
	fetch := func() (int, string) {
		cmd := exec.Command(fetchmail, "-f", rc, "--pidfile", filepath.Join(dir, "fetchmail.pid"), "--nodetach", "--nosyslog", "-v")
		cmd.Env = append(os.Environ(), "FETCHMAILHOME="+dir, "HOME="+dir)
		b, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), string(b)
		} else if err != nil {
			t.Fatalf("fetchmail: %v\n%s", err, b)
		}
		return 0, string(b)
	}
	if code, log := fetch(); code != 0 {
		t.Fatalf("first fetchmail run: exit status %d\n%s", code, log)
	}
	files := readDirFiles(t, out)
	if len(files) != len(gus.corpus) {
		t.Fatalf("fetchmail delivered %d messages, want %d", len(files), len(gus.corpus))
	}
	for i, m := range gus.corpus {
		checkFetchmailFile(t, "graph fetchmail "+m.Name, files[i], m)
	}
	if code, log := fetch(); code != 1 {
		t.Fatalf("second fetchmail run: exit status %d, want 1 (no new mail)\n%s", code, log)
	}
	if n := len(readDirFiles(t, out)); n != len(gus.corpus) {
		t.Errorf("second fetchmail run delivered %d more messages, want 0", n-len(gus.corpus))
	}
	for i, id := range gus.ids {
		if m, ok := gus.fake.Message(id); !ok || m.Folder != "deleteditems" {
			t.Errorf("on_delete default: %s is %+v, want it in deleteditems", gus.corpus[i].Name, m)
		}
	}

	// /metrics counts the Graph requests by account and call; /status
	// reports the token and the sizing of both accounts.
	metrics := get(t, "http://"+httpAddr+"/metrics")
	for _, series := range []string{`popbridge_graph_calls_total{account="gwen",call="delta"}`, `popbridge_graph_calls_total{account="gus",call="batch"}`} {
		if !strings.Contains(metrics, series+" ") {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	var status struct {
		Accounts []struct {
			Account, Backend string
			Token            struct{ State string }
			Sync             *struct {
				State       string
				Done, Total int
			}
		}
	}
	if err := json.Unmarshal([]byte(get(t, "http://"+httpAddr+"/status")), &status); err != nil {
		t.Fatal(err)
	}
	if len(status.Accounts) != 2 {
		t.Fatalf("/status: %+v", status)
	}
	for _, a := range status.Accounts {
		if a.Backend != "graph" || a.Token.State != "ok" || a.Sync == nil || a.Sync.Total != len(gwen.corpus) || a.Sync.Done != a.Sync.Total {
			t.Errorf("/status of %s: %+v %+v", a.Account, a, a.Sync)
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("graph: through the binary, python poplib (download_once, mark_read_on_retr) and fetchmail (DELE, on_delete deleteditems) "+
		"each downloaded a fake Graph mailbox of %d messages identical to source (ids longer than 70 characters, OAuth2 microsoft "+
		"consumers at the fake token endpoint); the second run of each got nothing; the fake's state checked after QUIT; "+
		"Graph calls in /metrics, token and sizing in /status", len(gwen.corpus))
}

// checkFetchmailFile compares what fetchmail delivered for m: the
// message with LF line ends, an empty line after a header without a
// body, and fetchmail's own notice for a message without a header.
func checkFetchmailFile(t *testing.T, label string, got []byte, m testcorpus.CorpusMessage) {
	t.Helper()
	want := lf(received(m.Data))
	switch {
	case len(want) == 0:
		if !bytes.HasPrefix(got, []byte("From: FETCHMAIL-DAEMON\n")) {
			t.Errorf("%s: got %q, want fetchmail's headerless-mail notice", label, clip(got))
		}
		return
	case !bytes.HasPrefix(want, []byte("\n")) && !bytes.Contains(want, []byte("\n\n")):
		want = append(want, '\n')
	}
	sameBytes(t, label, got, want)
}

// get returns the body of a GET of url.
func get(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	return string(b)
}
