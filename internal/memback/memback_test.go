package memback_test

import (
	"context"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/internal/memback"
	"github.com/popbridge/popbridge/proxy"
)

// read returns a function reading a whole stream, or failing t.
func read(t *testing.T) func(io.ReadCloser, error) string {
	return func(rc io.ReadCloser, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
}

func TestMaildrop(t *testing.T) {
	ctx := context.Background()
	b := memback.New()
	b.Put("ann", memback.Message{UID: "a", Body: "Subject: a\n\nbody\n"}, memback.Message{UID: "b", Body: "x"})
	mb, err := b.OpenMaildrop(ctx, backends.Login{User: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mb.(proxy.TopOpener); ok {
		t.Error("TopOpener without the switch")
	}
	if _, ok := mb.(proxy.Committer); ok {
		t.Error("Committer without the switch")
	}
	list, err := mb.List(ctx)
	if want := []proxy.MessageInfo{{UID: "a", Size: 20}, {UID: "b", Size: 1}}; err != nil || !reflect.DeepEqual(list, want) {
		t.Errorf("List = %v, %v; want %v (CRLF sizes)", list, err, want)
	}
	if got := read(t)(mb.Open(ctx, "a")); got != "Subject: a\n\nbody\n" {
		t.Errorf("Open = %q", got)
	}
	if _, err := mb.Open(ctx, "zz"); !errors.Is(err, proxy.ErrNoMessage) {
		t.Errorf("Open of a missing UID: %v", err)
	}
	if err := mb.Delete(ctx, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if msgs := b.Messages("ann"); len(msgs) != 1 || msgs[0].UID != "b" {
		t.Errorf("after Delete: %v", msgs)
	}
	if err := mb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := mb.Close(); err == nil {
		t.Error("a second Close went unnoticed")
	}
	// A user without messages has an empty maildrop.
	empty, err := b.OpenMaildrop(ctx, backends.Login{User: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if list, err := empty.List(ctx); len(list) != 0 || err != nil {
		t.Errorf("empty maildrop: %v, %v", list, err)
	}
	s := b.Stats()
	if s.Open != 1 || !reflect.DeepEqual(s.Deleted, []string{"a"}) || s.Calls[memback.OpOpenMaildrop] != 2 || s.Calls[memback.OpOpen] != 2 {
		t.Errorf("stats %+v", s)
	}
}

func TestSwitches(t *testing.T) {
	ctx := context.Background()
	b := &memback.Backend{Top: true, Commit: true, TopSuffix: "<top>"}
	b.Put("ann", memback.Message{UID: "a", Body: "H: 1\n\nx\n"}, memback.Message{UID: "b", Body: "y"})
	mb, err := b.OpenMaildrop(ctx, backends.Login{User: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	top, ok1 := mb.(proxy.TopOpener)
	com, ok2 := mb.(proxy.Committer)
	if !ok1 || !ok2 {
		t.Fatalf("TopOpener %v, Committer %v", ok1, ok2)
	}
	if got := read(t)(top.OpenTop(ctx, "a", 0)); got != "H: 1\n\nx\n<top>" {
		t.Errorf("OpenTop = %q", got)
	}
	if err := com.Commit(ctx, []string{"b"}, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	s := b.Stats()
	if !reflect.DeepEqual(s.Tops, []string{"a/0"}) || !reflect.DeepEqual(s.Commits, []memback.Commit{{[]string{"b"}, []string{"a"}}}) || len(s.Deleted) != 0 {
		t.Errorf("stats %+v", s)
	}
	if msgs := b.Messages("ann"); len(msgs) != 1 || msgs[0].UID != "a" {
		t.Errorf("after Commit: %v", msgs)
	}
	for _, sw := range []*memback.Backend{{Top: true}, {Commit: true}} {
		mb, _ := sw.OpenMaildrop(ctx, backends.Login{User: "x"})
		_, top := mb.(proxy.TopOpener)
		_, com := mb.(proxy.Committer)
		if top != sw.Top || com != sw.Commit {
			t.Errorf("switches top %v commit %v: mailbox has %v %v", sw.Top, sw.Commit, top, com)
		}
	}
}

func TestFaults(t *testing.T) {
	ctx := context.Background()
	b := memback.New()
	b.Set("ann", memback.Message{UID: "a", Body: strings.Repeat("x", 100)}, memback.Message{UID: "p", Body: "p"})
	boom := errors.New("boom")
	b.Inject(memback.Faults{OpenMaildrop: boom})
	if _, err := b.OpenMaildrop(ctx, backends.Login{User: "ann"}); err != boom {
		t.Errorf("OpenMaildrop: %v", err)
	}
	b.Inject(memback.Faults{List: boom, Delete: boom, Open: map[string]error{"a": boom}})
	mb, err := b.OpenMaildrop(ctx, backends.Login{User: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mb.List(ctx); err != boom {
		t.Errorf("List: %v", err)
	}
	if _, err := mb.Open(ctx, "a"); err != boom {
		t.Errorf("Open: %v", err)
	}
	if err := mb.Delete(ctx, []string{"a"}); err != boom || len(b.Messages("ann")) != 2 {
		t.Errorf("Delete: %v", err)
	}
	b.Inject(memback.Faults{BreakAfter: 10, BreakErr: boom})
	rc, err := mb.Open(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	if len(got) != 10 || err != boom {
		t.Errorf("broken stream: %d octets, %v", len(got), err)
	}
	b.Inject(memback.Faults{PanicOn: "p"})
	func() {
		defer func() {
			if recover() == nil {
				t.Error("no panic")
			}
		}()
		mb.Open(ctx, "p")
	}()

	// The hook sees every operation and may fail it.
	var ops []string
	b.Inject(memback.Faults{})
	b.Hook = func(ctx context.Context, op memback.Op, arg string) error {
		ops = append(ops, string(op)+" "+arg)
		if op == memback.OpList {
			return boom
		}
		return nil
	}
	if _, err := mb.List(ctx); err != boom {
		t.Errorf("List with a failing hook: %v", err)
	}
	mb.Close()
	if want := []string{"list ", "close "}; !reflect.DeepEqual(ops, want) {
		t.Errorf("hook saw %q, want %q", ops, want)
	}
}

func TestGen(t *testing.T) {
	ctx := context.Background()
	b := memback.New()
	b.Put("ann", memback.Message{UID: "g", Size: 6, Gen: func() io.Reader { return strings.NewReader("a\nb\n") }})
	mb, _ := b.OpenMaildrop(ctx, backends.Login{User: "ann"})
	if list, _ := mb.List(ctx); list[0].Size != 6 {
		t.Errorf("List = %v", list)
	}
	for range 2 {
		if got := read(t)(mb.Open(ctx, "g")); got != "a\nb\n" {
			t.Errorf("Open = %q", got)
		}
	}
}

// TestAuth checks AuthForTest and the upstream password check of a
// passthrough account.
func TestAuth(t *testing.T) {
	ctx := context.Background()
	b := memback.New()
	auth := memback.AuthForTest(b, map[string]string{"ann": "pw"})
	if _, err := auth.Login(ctx, "ann", "nope"); !errors.Is(err, proxy.ErrAuthFailed) {
		t.Errorf("wrong password: %v", err)
	}
	if _, err := auth.Login(ctx, "bob", "pw"); !errors.Is(err, proxy.ErrAuthFailed) {
		t.Errorf("unknown user: %v", err)
	}
	if _, err := auth.Login(ctx, "ann", "pw"); err != nil {
		t.Errorf("good password: %v", err)
	}
	// The backend got the login without the password.
	if got := b.Stats().Logins; !reflect.DeepEqual(got, []backends.Login{{User: "ann"}}) {
		t.Errorf("logins %v", got)
	}

	up := &memback.Backend{Passwords: map[string]string{"carol": "upstream"}}
	if _, err := up.OpenMaildrop(ctx, backends.Login{User: "carol", Password: "x"}); !errors.Is(err, proxy.ErrAuthFailed) {
		t.Errorf("wrong upstream password: %v", err)
	}
	if _, err := up.OpenMaildrop(ctx, backends.Login{User: "carol", Password: "upstream"}); err != nil {
		t.Errorf("right upstream password: %v", err)
	}
	if got := up.Stats().Logins; len(got) != 2 || got[0].Password != "x" || got[1].Password != "upstream" {
		t.Errorf("upstream logins %d", len(got))
	}
}

// TestPassthrough: PassthroughForTest hands the client's credentials to
// the backend, which refuses a wrong upstream password.
func TestPassthrough(t *testing.T) {
	ctx := context.Background()
	b := &memback.Backend{Passwords: map[string]string{"carol": "upstream"}}
	pt := memback.PassthroughForTest(b)
	if _, err := pt.Login(ctx, "carol", "wrong"); !errors.Is(err, proxy.ErrAuthFailed) {
		t.Errorf("wrong upstream password: %v", err)
	}
	if _, err := pt.Login(ctx, "carol", "upstream"); err != nil {
		t.Errorf("right upstream password: %v", err)
	}
	want := []backends.Login{{User: "carol", Password: "wrong"}, {User: "carol", Password: "upstream"}}
	if got := b.Stats().Logins; !reflect.DeepEqual(got, want) {
		t.Errorf("logins %d, want the client's credentials", len(got))
	}
}
