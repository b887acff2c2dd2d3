package gmail_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/backends/gmail"
	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/pop3test"
)

// TestLargeFirstLogin: a first login on a mailbox too large to size
// within the login's deadline answers +OK in time with the oldest
// messages whose exact size is known; the sizing goes on in the
// background, reports its progress, and later logins offer more, in
// arrival order after what was offered before. Close stops it; it never
// changes Gmail.
func TestLargeFirstLogin(t *testing.T) {
	const messages = 600 // 3,000 quota units: about 28 s at 6,000 units/minute
	fake := gmailtest.Start(t)
	want := map[string]int64{}
	for i := range messages {
		raw := fmt.Appendf(nil, "Subject: message %d\r\n\r\n%s\r\n", i, strings.Repeat("x", i%97))
		want[fake.Add(raw, "INBOX")] = int64(len(raw))
	}
	ids := fake.IDs("INBOX") // oldest first
	fake.SetLatency(20 * time.Millisecond)
	logs := &dovecottest.SyncBuffer{}
	log := zerolog.New(logs)
	f := newFixture(t, fake, func(o *gmail.Options) {
		o.LoginWait = 3 * time.Second
		o.ProgressEvery = 200 * time.Millisecond
		o.Logger = &log
	})
	const deadline = 4 * time.Second // the old login sized all 600 first: -ERR [SYS/TEMP]
	f.srv.BackendTimeout = deadline

	// session logs in, checks the maildrop against the fake and returns
	// its listing.
	session := func(name string) (*pop3test.Client, listing, time.Duration) {
		t.Helper()
		c, err := pop3test.Dial(f.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.Cmd("USER alice")
		start := time.Now()
		reply, err := c.Cmd("PASS pw")
		took := time.Since(start)
		if err != nil || !strings.HasPrefix(reply, "+OK") || took >= deadline {
			t.Fatalf("%s: PASS gave %q, %v after %v", name, reply, err, took)
		}
		l := list(t, c)
		ids := fake.IDs("INBOX")
		// The oldest messages, oldest first, with exact sizes.
		if !slices.Equal(l.uids, ids[:len(l.uids)]) {
			t.Fatalf("%s: the %d messages offered are not the oldest in order", name, len(l.uids))
		}
		for i, uid := range l.uids {
			if l.sizes[i] != want[uid] {
				t.Fatalf("%s: LIST %d says %d octets, the message has %d", name, i+1, l.sizes[i], want[uid])
			}
		}
		return c, l, took
	}

	c, first, took1 := session("first login")
	if len(first.uids) == 0 || len(first.uids) >= messages {
		t.Fatalf("first login offered %d of %d messages", len(first.uids), messages)
	}
	if p := f.b.SyncProgress(); !p.Running || p.Total != messages || p.Done < len(first.uids) || p.Units == 0 || p.ETA <= 0 {
		t.Errorf("progress after the first login: %+v", p)
	}
	// RETR of an offered message while the sizing goes on.
	if _, body, err := c.CmdMulti("RETR 1"); err != nil || int64(len(body)) < want[ids[0]] {
		t.Errorf("RETR 1: %v, %d octets", err, len(body))
	}
	quit(t, c)

	time.Sleep(time.Second)
	c, second, took2 := session("second login")
	// With messages to offer and more to size than fits in LoginWait,
	// the login does not wait for the sizing.
	if took2 > 2*time.Second {
		t.Errorf("second login waited %v for a sizing it could not wait out", took2)
	}
	if len(second.uids) <= len(first.uids) {
		t.Errorf("second login offered %d messages, the first %d: want more", len(second.uids), len(first.uids))
	}
	// The first listing is a prefix of the second (same UIDLs, sizes and
	// order): nothing offered later sorts before what was offered.
	if !slices.Equal(second.uids[:len(first.uids)], first.uids) || !slices.Equal(second.sizes[:len(first.sizes)], first.sizes) {
		t.Errorf("the second listing does not start with the first")
	}
	// DELE works as ever: archived at QUIT, while the sizing writes too.
	if r, err := c.Cmd("DELE 1"); err != nil {
		t.Fatalf("DELE 1: %q %v", r, err)
	}
	if r := quit(t, c); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("QUIT: %s", r)
	}
	if m, _ := fake.Message(ids[0]); slices.Contains(m.Labels, "INBOX") {
		t.Errorf("message 1 still in INBOX after DELE and QUIT")
	}

	// Progress lines: done/total, quota units and time left.
	var line string
	for range 50 {
		for l := range strings.SplitSeq(logs.String(), "\n") {
			if strings.Contains(l, "sizing messages in the background") {
				line = l
			}
		}
		if line != "" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, field := range []string{`"level":"info"`, `"account":"alice"`, `"done":`, fmt.Sprintf(`"total":%d`, messages), `"units":`, `"eta_s":`} {
		if !strings.Contains(line, field) {
			t.Errorf("progress line %q lacks %s", line, field)
		}
	}

	// Close stops the background work; Gmail was not changed by it.
	f.b.Close()
	p := f.b.SyncProgress()
	calls := sum(fake.Calls())
	time.Sleep(300 * time.Millisecond)
	if n := sum(fake.Calls()); n != calls {
		t.Errorf("%d requests after Close", n-calls)
	}
	if p.Running || p.Err == nil {
		t.Errorf("progress after Close: %+v", p)
	}
	if n := len(fake.IDs("INBOX")); n != messages-1 {
		t.Errorf("INBOX holds %d messages, want %d", n, messages-1)
	}

	// The sizes learnt are kept: after a restart the next login offers
	// at least as much at once.
	f.restart()
	c, third, _ := session("after a restart")
	quit(t, c)
	if len(third.uids) < len(second.uids)-1 {
		t.Errorf("after a restart %d offered, before %d", len(third.uids), len(second.uids)-1)
	}
	t.Logf("gmail: %d-message mailbox at 20 ms a request and 6,000 units/minute, login deadline %v: first +OK after %v with the oldest %d messages, "+
		"a second login %d after %v, after a restart %d; progress logged (%s); nothing requested after Close (%d of %d sized)",
		messages, deadline, took1.Round(time.Millisecond), len(first.uids), len(second.uids), took2.Round(time.Millisecond), len(third.uids), line, p.Done, p.Total)
}

// TestUnsizableMessage: a message whose raw does not decode is not
// offered, and does not hold back the messages that arrived after it.
func TestUnsizableMessage(t *testing.T) {
	fake := gmailtest.Start(t)
	var ids []string
	for i := range 5 {
		ids = append(ids, fake.Add(fmt.Appendf(nil, "Subject: %d\r\n\r\nbody\r\n", i), "INBOX"))
	}
	fake.SetBadRaw(ids[1], true)
	logs := &dovecottest.SyncBuffer{}
	log := zerolog.New(logs)
	f := newFixture(t, fake, func(o *gmail.Options) { o.Logger = &log })
	c := f.login()
	l := list(t, c)
	quit(t, c)
	if want := []string{ids[0], ids[2], ids[3], ids[4]}; !slices.Equal(l.uids, want) {
		t.Errorf("offered %v, want %v", l.uids, want)
	}
	if !strings.Contains(logs.String(), "a message cannot be sized") {
		t.Errorf("no warning about the message:\n%s", logs)
	}
	// It is offered once Gmail sends it whole.
	fake.SetBadRaw(ids[1], false)
	c = f.login()
	l = list(t, c)
	quit(t, c)
	if !slices.Equal(l.uids, ids) {
		t.Errorf("after the fault: offered %v, want %v", l.uids, ids)
	}
	t.Logf("gmail: a message whose raw does not decode was left out (with a warning) without holding back later ones, and offered once readable")
}
