package gmailtest_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/api/gmail/v1"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"

	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
)

const token = "test-token"

// service is a real Gmail client for srv with a static bearer token.
func service(t *testing.T, srv *gmailtest.Server) *gmail.Service {
	t.Helper()
	hc := &http.Client{Transport: &oauth2.Transport{Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token})}}
	svc, err := gmail.NewService(context.Background(), option.WithEndpoint(srv.Endpoint()), option.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func rawMsg(from, subject, body string) []byte {
	return []byte("From: " + from + "\r\nTo: user@example.com\r\nSubject: " + subject + "\r\n\r\n" + body + "\r\n")
}

// gerr asserts err is a *googleapi.Error with code and reason.
func gerr(t *testing.T, err error, code int, reason string) *googleapi.Error {
	t.Helper()
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		t.Fatalf("error %v (%T) is not a *googleapi.Error", err, err)
	}
	if ge.Code != code {
		t.Fatalf("code %d, want %d (%s)", ge.Code, code, ge.Body)
	}
	if len(ge.Errors) == 0 || ge.Errors[0].Reason != reason {
		t.Fatalf("errors %+v, want reason %q", ge.Errors, reason)
	}
	return ge
}

func TestListPagination(t *testing.T) {
	srv := gmailtest.Start(t)
	svc := service(t, srv)
	ctx := context.Background()
	const n = 1234
	for i := range n {
		srv.Add(rawMsg("a@example.org", fmt.Sprint("m", i), "body"), "INBOX")
	}
	var pages []int
	var ids []string
	var dates []int64
	err := svc.Users.Messages.List("me").LabelIds("INBOX").MaxResults(500).Pages(ctx, func(r *gmail.ListMessagesResponse) error {
		pages = append(pages, len(r.Messages))
		if r.ResultSizeEstimate != n {
			t.Errorf("resultSizeEstimate %d", r.ResultSizeEstimate)
		}
		for _, m := range r.Messages {
			if m.ThreadId != m.Id || len(m.Id) != 16 {
				t.Errorf("bad id/threadId %q %q", m.Id, m.ThreadId)
			}
			ids = append(ids, m.Id)
			mm, _ := srv.Message(m.Id)
			dates = append(dates, mm.InternalDate.UnixMilli())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pages, []int{500, 500, 234}) {
		t.Fatalf("pages %v", pages)
	}
	// Newest first; ids grow with internalDate.
	if !slices.IsSortedFunc(dates, func(a, b int64) int { return int(b - a) }) ||
		!slices.IsSortedFunc(ids, func(a, b string) int { return strings.Compare(b, a) }) {
		t.Fatal("not newest first")
	}
	if all := srv.IDs("INBOX"); len(all) != n || all[0] != ids[n-1] {
		t.Fatalf("IDs: %d, oldest %s want %s", len(all), all[0], ids[n-1])
	}
	// Clamp, and a token stable under concurrent inserts.
	r, err := svc.Users.Messages.List("me").MaxResults(2000).Do()
	if err != nil || len(r.Messages) != 500 || r.NextPageToken == "" {
		t.Fatalf("clamp: %v %d", err, len(r.Messages))
	}
	for range 10 {
		srv.Add(rawMsg("b@example.org", "new", "x"), "INBOX")
	}
	r2, err := svc.Users.Messages.List("me").MaxResults(500).PageToken(r.NextPageToken).Do()
	if err != nil || len(r2.Messages) != 500 || r2.Messages[0].Id != ids[500] {
		t.Fatalf("page 2 after inserts: %v, first %v want %s", err, r2.Messages[0], ids[500])
	}
	// Empty result: no messages, no token.
	r3, err := svc.Users.Messages.List("me").LabelIds("STARRED").Do()
	if err != nil || r3.Messages != nil || r3.NextPageToken != "" || r3.ResultSizeEstimate != 0 {
		t.Fatalf("empty: %v %+v", err, r3)
	}
	// Default page size 100.
	r4, err := svc.Users.Messages.List("me").Do()
	if err != nil || len(r4.Messages) != 100 {
		t.Fatalf("default: %v %d", err, len(r4.Messages))
	}
}

func listIDs(t *testing.T, call *gmail.UsersMessagesListCall) []string {
	t.Helper()
	var ids []string
	err := call.Pages(context.Background(), func(r *gmail.ListMessagesResponse) error {
		for _, m := range r.Messages {
			ids = append(ids, m.Id)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

func sorted(ids ...string) []string { slices.Sort(ids); return ids }

func TestListLabelsAndSpamTrash(t *testing.T) {
	srv := gmailtest.Start(t)
	svc := service(t, srv)
	read := srv.Add(rawMsg("a@x", "read", "b"), "INBOX")
	unread := srv.Add(rawMsg("a@x", "unread", "b"), "INBOX", "UNREAD")
	spam := srv.Add(rawMsg("a@x", "spam", "b"), "SPAM", "UNREAD")
	trash := srv.Add(rawMsg("a@x", "trash", "b"), "TRASH", "INBOX")
	archived := srv.Add(rawMsg("a@x", "arch", "b"), "Label_7")

	if got := listIDs(t, svc.Users.Messages.List("me").LabelIds("INBOX", "UNREAD")); !slices.Equal(got, []string{unread}) {
		t.Errorf("INBOX∩UNREAD: %v", got)
	}
	if got := listIDs(t, svc.Users.Messages.List("me").LabelIds("INBOX")); !slices.Equal(got, sorted(read, unread)) {
		t.Errorf("INBOX: %v", got)
	}
	if got := listIDs(t, svc.Users.Messages.List("me").LabelIds("INBOX").IncludeSpamTrash(true)); !slices.Equal(got, sorted(read, unread, trash)) {
		t.Errorf("INBOX+spamtrash: %v", got)
	}
	if got := listIDs(t, svc.Users.Messages.List("me")); !slices.Equal(got, sorted(read, unread, archived)) {
		t.Errorf("all: %v", got)
	}
	if got := listIDs(t, svc.Users.Messages.List("me").IncludeSpamTrash(true)); len(got) != 5 {
		t.Errorf("all+spamtrash: %v", got)
	}
	if got := listIDs(t, svc.Users.Messages.List("me").LabelIds("TRASH")); !slices.Equal(got, []string{trash}) {
		t.Errorf("TRASH named explicitly: %v", got)
	}
	if got := listIDs(t, svc.Users.Messages.List("me").LabelIds("UNREAD").IncludeSpamTrash(true)); !slices.Equal(got, sorted(unread, spam)) {
		t.Errorf("UNREAD+spamtrash: %v", got)
	}

	// labels.get and profile counts.
	l, err := svc.Users.Labels.Get("me", "INBOX").Do()
	if err != nil || l.Type != "system" || l.MessagesTotal != 3 || l.MessagesUnread != 1 || l.ThreadsTotal != 3 {
		t.Errorf("INBOX label: %v %+v", err, l)
	}
	l, err = svc.Users.Labels.Get("me", "Label_7").Do()
	if err != nil || l.Type != "user" || l.MessagesTotal != 1 {
		t.Errorf("user label: %v %+v", err, l)
	}
	_, err = svc.Users.Labels.Get("me", "NOPE").Do()
	gerr(t, err, 404, "notFound")
	p, err := svc.Users.GetProfile("user@example.com").Do()
	if err != nil || p.EmailAddress != "user@example.com" || p.MessagesTotal != 5 || p.HistoryId != srv.HistoryID() {
		t.Errorf("profile: %v %+v", err, p)
	}
	_, err = svc.Users.GetProfile("other@example.com").Do()
	gerr(t, err, 403, "forbidden")
}

func TestListQuery(t *testing.T) {
	srv := gmailtest.Start(t)
	svc := service(t, srv)
	day := func(d int) time.Time { return time.Date(2026, 3, d, 12, 0, 0, 0, time.UTC) }
	a := srv.AddAt(rawMsg("Alice <alice@Example.org>", "Invoice March", "x"), day(1), "INBOX", "UNREAD")
	b := srv.AddAt(rawMsg("bob@example.net", "=?UTF-8?Q?Caf=C3=A9_news?=", "x"), day(2), "INBOX")
	c := srv.AddAt(rawMsg("carol@example.org", "hello", "x"), day(3), "INBOX", "UNREAD", "Label_9")

	cases := []struct {
		q    string
		want []string
	}{
		{"is:unread", sorted(a, c)},
		{"is:read", []string{b}},
		{"from:example.org", sorted(a, c)},
		{"from:ALICE", []string{a}},
		{"subject:invoice", []string{a}},
		{"subject:café", []string{b}},
		{`subject:"invoice march"`, []string{a}},
		{"label:Label_9", []string{c}},
		{"label:inbox is:unread from:carol", []string{c}},
		{fmt.Sprint("after:", day(2).Unix()), sorted(b, c)},
		{fmt.Sprint("before:", day(2).Unix()), []string{a}},
		{"after:2026/03/02 before:2026/03/03", []string{b}},
		{"after:2026/3/4", nil},
		{"  ", sorted(a, b, c)},
	}
	for _, tc := range cases {
		if got := listIDs(t, svc.Users.Messages.List("me").Q(tc.q)); !slices.Equal(got, tc.want) {
			t.Errorf("q=%q: %v, want %v", tc.q, got, tc.want)
		}
	}
	for _, q := range []string{"invoice", "has:attachment", "is:starred", "after:yesterday", `subject:"open`, "from:"} {
		_, err := svc.Users.Messages.List("me").Q(q).Do()
		ge := gerr(t, err, 400, "invalidArgument")
		if ge.Message != "Invalid query" {
			t.Errorf("q=%q: message %q", q, ge.Message)
		}
	}
}

func TestGetFormats(t *testing.T) {
	srv := gmailtest.Start(t)
	svc := service(t, srv)
	raws := [][]byte{
		rawMsg("a@x", "one", "hello world"),    // len%3 != 0 needs padding
		rawMsg("a@x", "two", "hello world!!"),  // another length
		rawMsg("a@x", "three", "hello world!"), // unpadded below
	}
	for _, r := range raws {
		if len(r)%3 == 0 {
			t.Fatalf("test message of %d bytes needs no padding", len(r))
		}
	}
	var ids []string
	for _, r := range raws {
		ids = append(ids, srv.Add(r, "INBOX", "UNREAD"))
	}
	if !srv.SetUnpadded(ids[2], true) || srv.SetUnpadded("ffffffffffffffff", true) {
		t.Fatal("SetUnpadded")
	}
	for i, id := range ids {
		m, err := svc.Users.Messages.Get("me", id).Format("raw").Do()
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(m.Raw, "=") != (i != 2) {
			t.Errorf("%d: padding of %q", i, m.Raw)
		}
		dec, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(m.Raw, "="))
		if err != nil || string(dec) != string(raws[i]) {
			t.Errorf("%d: decode %v %q", i, err, dec)
		}
		snap, _ := srv.Message(id)
		if m.SizeEstimate == int64(len(raws[i])) || m.SizeEstimate != snap.SizeEstimate {
			t.Errorf("%d: sizeEstimate %d (len %d)", i, m.SizeEstimate, len(raws[i]))
		}
		if m.HistoryId != snap.HistoryID || m.HistoryId == 0 || m.InternalDate != snap.InternalDate.UnixMilli() {
			t.Errorf("%d: historyId %d internalDate %d, snapshot %+v", i, m.HistoryId, m.InternalDate, snap)
		}
		if !slices.Equal(m.LabelIds, []string{"INBOX", "UNREAD"}) || m.Snippet == "" || m.ThreadId != id {
			t.Errorf("%d: %+v", i, m)
		}
	}
	m, err := svc.Users.Messages.Get("me", ids[0]).Format("minimal").Do()
	if err != nil || m.Raw != "" || m.Snippet != "" || m.Payload != nil || m.SizeEstimate == 0 || m.HistoryId == 0 {
		t.Errorf("minimal: %v %+v", err, m)
	}
	m, err = svc.Users.Messages.Get("me", ids[0]).Format("metadata").MetadataHeaders("Subject").Do()
	if err != nil || m.Payload == nil || len(m.Payload.Headers) != 1 || m.Payload.Headers[0].Value != "one" {
		t.Errorf("metadata: %v %+v", err, m.Payload)
	}
	m, err = svc.Users.Messages.Get("me", ids[0]).Do() // full
	if err != nil || m.Payload == nil || len(m.Payload.Headers) != 3 || m.Payload.MimeType != "text/plain" {
		t.Fatalf("full: %v %+v", err, m)
	}
	if body, _ := base64.URLEncoding.DecodeString(m.Payload.Body.Data); string(body) != "hello world\r\n" {
		t.Errorf("full body %q", body)
	}
	_, err = svc.Users.Messages.Get("me", "0123456789abcdef").Format("raw").Do()
	gerr(t, err, 404, "notFound")

	// The wire format: historyId and internalDate are strings,
	// sizeEstimate a number.
	req, _ := http.NewRequest("GET", srv.URL+"/gmail/v1/users/me/messages/"+ids[0]+"?format=minimal&alt=json", nil)
	req.Header.Set("Authorization", "Bearer x")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var wire map[string]any
	json.NewDecoder(resp.Body).Decode(&wire)
	resp.Body.Close()
	if _, ok := wire["historyId"].(string); !ok {
		t.Errorf("historyId: %T", wire["historyId"])
	}
	if _, ok := wire["internalDate"].(string); !ok {
		t.Errorf("internalDate: %T", wire["internalDate"])
	}
	if _, ok := wire["sizeEstimate"].(float64); !ok {
		t.Errorf("sizeEstimate: %T", wire["sizeEstimate"])
	}
}

func TestModifyTrash(t *testing.T) {
	srv := gmailtest.Start(t)
	svc := service(t, srv)
	id := srv.Add(rawMsg("a@x", "s", "b"), "INBOX", "UNREAD")
	m, err := svc.Users.Messages.Trash("me", id).Do()
	if err != nil || !slices.Equal(m.LabelIds, []string{"TRASH", "UNREAD"}) || m.HistoryId != srv.HistoryID() {
		t.Fatalf("trash: %v %+v", err, m)
	}
	if snap, _ := srv.Message(id); !snap.Trashed || snap.Deleted {
		t.Errorf("snapshot %+v", snap)
	}
	m, err = svc.Users.Messages.Untrash("me", id).Do()
	if err != nil || !slices.Equal(m.LabelIds, []string{"INBOX", "UNREAD"}) {
		t.Fatalf("untrash: %v %+v", err, m)
	}
	m, err = svc.Users.Messages.Modify("me", id, &gmail.ModifyMessageRequest{
		AddLabelIds: []string{"STARRED"}, RemoveLabelIds: []string{"INBOX", "UNREAD"}}).Do()
	if err != nil || !slices.Equal(m.LabelIds, []string{"STARRED"}) {
		t.Fatalf("modify: %v %+v", err, m)
	}
	_, err = svc.Users.Messages.Modify("me", id, &gmail.ModifyMessageRequest{AddLabelIds: []string{"NoSuchLabel"}}).Do()
	gerr(t, err, 400, "invalidArgument")
	many := make([]string, 101)
	for i := range many {
		many[i] = "INBOX"
	}
	_, err = svc.Users.Messages.Modify("me", id, &gmail.ModifyMessageRequest{RemoveLabelIds: many}).Do()
	gerr(t, err, 400, "invalidArgument")
	_, err = svc.Users.Messages.Trash("me", "00000000000000ff").Do()
	gerr(t, err, 404, "notFound")
}

func TestBatchModify(t *testing.T) {
	srv := gmailtest.Start(t)
	svc := service(t, srv)
	var ids []string
	for range 3 {
		ids = append(ids, srv.Add(rawMsg("a@x", "s", "b"), "INBOX", "UNREAD"))
	}
	big := make([]string, 1001)
	for i := range big {
		big[i] = ids[0]
	}
	err := svc.Users.Messages.BatchModify("me", &gmail.BatchModifyMessagesRequest{Ids: big, RemoveLabelIds: []string{"UNREAD"}}).Do()
	ge := gerr(t, err, 400, "invalidArgument")
	if ge.Message != "Number of ids cannot exceed 1000" {
		t.Errorf("message %q", ge.Message)
	}
	if m, _ := srv.Message(ids[0]); !slices.Contains(m.Labels, "UNREAD") {
		t.Error("failed batchModify changed labels")
	}
	err = svc.Users.Messages.BatchModify("me", &gmail.BatchModifyMessagesRequest{
		Ids: append(ids[:2:2], "0000000000000001"), RemoveLabelIds: []string{"UNREAD"}}).Do()
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		m, _ := srv.Message(id)
		if slices.Contains(m.Labels, "UNREAD") != (i == 2) {
			t.Errorf("%s: %v", id, m.Labels)
		}
	}
	if got := srv.IDs("UNREAD"); !slices.Equal(got, ids[2:]) {
		t.Errorf("IDs(UNREAD) %v", got)
	}
}

func TestDeleteScope(t *testing.T) {
	srv := gmailtest.Start(t)
	svc := service(t, srv)
	a := srv.Add(rawMsg("a@x", "s", "b"), "INBOX")
	b := srv.Add(rawMsg("a@x", "s", "b"), "INBOX")
	c := srv.Add(rawMsg("a@x", "s", "b"), "INBOX")
	ge := gerr(t, svc.Users.Messages.Delete("me", a).Do(), 403, "insufficientPermissions")
	if ge.Message != "Request had insufficient authentication scopes." || ge.Errors[0].Message != "Insufficient Permission" {
		t.Errorf("403 body %s", ge.Body)
	}
	gerr(t, svc.Users.Messages.BatchDelete("me", &gmail.BatchDeleteMessagesRequest{Ids: []string{b}}).Do(), 403, "insufficientPermissions")
	if got := srv.IDs("INBOX"); len(got) != 3 {
		t.Fatalf("deleted without scope: %v", got)
	}
	srv.SetAllowDelete(true)
	if err := svc.Users.Messages.Delete("me", a).Do(); err != nil {
		t.Fatal(err)
	}
	if err := svc.Users.Messages.BatchDelete("me", &gmail.BatchDeleteMessagesRequest{Ids: []string{b, c}}).Do(); err != nil {
		t.Fatal(err)
	}
	if m, ok := srv.Message(a); !ok || !m.Deleted {
		t.Errorf("snapshot %+v", m)
	}
	if got := srv.IDs(""); len(got) != 0 {
		t.Errorf("left %v", got)
	}
	_, err := svc.Users.Messages.Get("me", a).Do()
	gerr(t, err, 404, "notFound")
	gerr(t, svc.Users.Messages.Delete("me", a).Do(), 404, "notFound")
}

type histEvent struct {
	kind   string // added, deleted, labelAdded, labelRemoved
	id     string
	labels string // labels changed (or carried, for added)
}

func historyEvents(t *testing.T, call *gmail.UsersHistoryListCall) ([]histEvent, uint64) {
	t.Helper()
	var ev []histEvent
	var cur, last uint64
	err := call.Pages(context.Background(), func(r *gmail.ListHistoryResponse) error {
		cur = r.HistoryId
		for _, h := range r.History {
			if h.Id <= last {
				t.Errorf("history ids not increasing: %d after %d", h.Id, last)
			}
			last = h.Id
			if len(h.Messages) != 1 {
				t.Errorf("record %d: messages %v", h.Id, h.Messages)
			}
			for _, a := range h.MessagesAdded {
				ev = append(ev, histEvent{"added", a.Message.Id, strings.Join(a.Message.LabelIds, ",")})
			}
			for _, d := range h.MessagesDeleted {
				ev = append(ev, histEvent{"deleted", d.Message.Id, ""})
			}
			for _, l := range h.LabelsAdded {
				ev = append(ev, histEvent{"labelAdded", l.Message.Id, strings.Join(l.LabelIds, ",")})
			}
			for _, l := range h.LabelsRemoved {
				ev = append(ev, histEvent{"labelRemoved", l.Message.Id, strings.Join(l.LabelIds, ",")})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ev, cur
}

func TestHistory(t *testing.T) {
	srv := gmailtest.Start(t)
	svc := service(t, srv)
	m0 := srv.Add(rawMsg("a@x", "s", "b"), "INBOX", "UNREAD")
	m2 := srv.Add(rawMsg("a@x", "s", "b"), "INBOX")
	m3 := srv.Add(rawMsg("a@x", "s", "b"), "INBOX")
	p, err := svc.Users.GetProfile("me").Do()
	if err != nil {
		t.Fatal(err)
	}
	start := p.HistoryId
	if ev, cur := historyEvents(t, svc.Users.History.List("me").StartHistoryId(start)); ev != nil || cur != start {
		t.Fatalf("nothing happened: %v %d", ev, cur)
	}

	m1 := srv.Add(rawMsg("a@x", "s", "b"), "INBOX", "UNREAD")
	if _, err := svc.Users.Messages.Modify("me", m0, &gmail.ModifyMessageRequest{RemoveLabelIds: []string{"INBOX"}}).Do(); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Users.Messages.Trash("me", m2).Do(); err != nil {
		t.Fatal(err)
	}
	srv.Remove(m3)
	m4 := srv.Add(rawMsg("a@x", "s", "b"), "Label_1")
	srv.Modify(m4, []string{"STARRED"}, nil)
	srv.Modify(m1, []string{"UNREAD"}, nil) // no change, no record

	want := []histEvent{
		{"added", m1, "INBOX,UNREAD"},
		{"labelRemoved", m0, "INBOX"},
		{"labelAdded", m2, "TRASH"},
		{"labelRemoved", m2, "INBOX"},
		{"deleted", m3, ""},
	}
	ev, cur := historyEvents(t, svc.Users.History.List("me").StartHistoryId(start).LabelId("INBOX"))
	if !slices.Equal(ev, want) {
		t.Errorf("INBOX history:\n got %v\nwant %v", ev, want)
	}
	if cur != srv.HistoryID() || cur <= start {
		t.Errorf("historyId %d, server %d", cur, srv.HistoryID())
	}
	// Paged by one record at a time: the same events.
	if ev2, _ := historyEvents(t, svc.Users.History.List("me").StartHistoryId(start).LabelId("INBOX").MaxResults(1)); !slices.Equal(ev2, want) {
		t.Errorf("paged: %v", ev2)
	}
	r, err := svc.Users.History.List("me").StartHistoryId(start).MaxResults(2).Do()
	if err != nil || len(r.History) != 2 || r.NextPageToken == "" {
		t.Fatalf("page: %v %+v", err, r)
	}
	ev, _ = historyEvents(t, svc.Users.History.List("me").StartHistoryId(start).HistoryTypes("messageAdded", "messageDeleted"))
	if want := []histEvent{{"added", m1, "INBOX,UNREAD"}, {"deleted", m3, ""}, {"added", m4, "Label_1"}}; !slices.Equal(ev, want) {
		t.Errorf("added/deleted: %v", ev)
	}
	ev, _ = historyEvents(t, svc.Users.History.List("me").StartHistoryId(start).HistoryTypes("labelAdded").LabelId("Label_1"))
	if want := []histEvent{{"labelAdded", m4, "STARRED"}}; !slices.Equal(ev, want) {
		t.Errorf("labelAdded Label_1: %v", ev)
	}
	// Message historyIds are record ids, and ids have gaps.
	all, err := svc.Users.History.List("me").StartHistoryId(start).Do()
	if err != nil || len(all.History) != 6 {
		t.Fatalf("all: %v %d", err, len(all.History))
	}
	gaps := false
	prev := start
	for _, h := range all.History {
		gaps = gaps || h.Id-prev > 1
		prev = h.Id
	}
	if !gaps {
		t.Error("history ids have no gaps")
	}
	if m, _ := srv.Message(m4); m.HistoryID != all.History[5].Id {
		t.Errorf("m4 historyId %d, record %d", m.HistoryID, all.History[5].Id)
	}
	// From the middle: only later records.
	mid := all.History[3].Id
	if r, err := svc.Users.History.List("me").StartHistoryId(mid).Do(); err != nil || len(r.History) != 2 || r.History[0].Id != all.History[4].Id {
		t.Errorf("from mid: %v %+v", err, r)
	}

	_, err = svc.Users.History.List("me").Do()
	gerr(t, err, 400, "invalidArgument")
	_, err = svc.Users.History.List("me").StartHistoryId(start).HistoryTypes("bogus").Do()
	gerr(t, err, 400, "invalidArgument")
	_, err = svc.Users.History.List("me").StartHistoryId(start - 1000).Do()
	gerr(t, err, 404, "notFound")

	srv.ExpireHistory()
	for _, id := range []uint64{start, cur} {
		_, err = svc.Users.History.List("me").StartHistoryId(id).Do()
		if ge := gerr(t, err, 404, "notFound"); ge.Message != "Requested entity was not found." {
			t.Errorf("404 message %q", ge.Message)
		}
	}
	p, _ = svc.Users.GetProfile("me").Do()
	if r, err := svc.Users.History.List("me").StartHistoryId(p.HistoryId).Do(); err != nil || r.History != nil || r.HistoryId != p.HistoryId {
		t.Errorf("after expiry, fresh id: %v %+v", err, r)
	}
	m5 := srv.Add(rawMsg("a@x", "s", "b"), "INBOX")
	if ev, _ := historyEvents(t, svc.Users.History.List("me").StartHistoryId(p.HistoryId)); !slices.Equal(ev, []histEvent{{"added", m5, "INBOX"}}) {
		t.Errorf("after expiry: %v", ev)
	}
}

func TestFailNext(t *testing.T) {
	srv := gmailtest.Start(t)
	svc := service(t, srv)
	srv.FailNext(2, 429, "", "7")
	for range 2 {
		_, err := svc.Users.GetProfile("me").Do()
		ge := gerr(t, err, 429, "rateLimitExceeded")
		if ge.Header.Get("Retry-After") != "7" || ge.Message != "Too many concurrent requests for user" {
			t.Errorf("429: %q %q", ge.Header.Get("Retry-After"), ge.Message)
		}
	}
	if _, err := svc.Users.GetProfile("me").Do(); err != nil {
		t.Fatal(err)
	}

	srv.FailNextWith(gmailtest.Failure{N: 1, Method: gmailtest.MList, Status: 403, Reason: "userRateLimitExceeded"})
	if _, err := svc.Users.GetProfile("me").Do(); err != nil {
		t.Fatalf("other method failed: %v", err)
	}
	_, err := svc.Users.Messages.List("me").Do()
	ge := gerr(t, err, 403, "userRateLimitExceeded")
	if ge.Message != "User Rate Limit Exceeded" || ge.Header.Get("Retry-After") != "" {
		t.Errorf("403: %q", ge.Body)
	}
	srv.FailNext(1, 403, "rateLimitExceeded", "")
	_, err = svc.Users.Messages.List("me").Do()
	gerr(t, err, 403, "rateLimitExceeded")
	srv.FailNext(1, 503, "", "1")
	_, err = svc.Users.Messages.List("me").Do()
	gerr(t, err, 503, "backendError")
	srv.FailNext(1, 500, "", "")
	gerr(t, svc.Users.Messages.BatchDelete("me", &gmail.BatchDeleteMessagesRequest{}).Do(), 500, "backendError")
	if _, err := svc.Users.Messages.List("me").Do(); err != nil {
		t.Fatal(err)
	}
}

func TestAuth(t *testing.T) {
	srv := gmailtest.Start(t)
	noauth, err := gmail.NewService(context.Background(), option.WithEndpoint(srv.Endpoint()), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	_, err = noauth.Users.GetProfile("me").Do()
	ge := gerr(t, err, 401, "authError")
	if ge.Message != "Invalid Credentials" || !strings.Contains(ge.Body, `"location":"Authorization"`) {
		t.Errorf("401 body %s", ge.Body)
	}
	if _, err := service(t, srv).Users.GetProfile("me").Do(); err != nil {
		t.Fatal(err)
	}
	srv.SetValidToken(func(tok string) bool { return tok == "other" })
	_, err = service(t, srv).Users.GetProfile("me").Do()
	gerr(t, err, 401, "authError")
	if got := srv.Calls()[gmailtest.MGetProfile]; got != 3 {
		t.Errorf("calls %d", got)
	}
}

func TestCallsUnits(t *testing.T) {
	srv := gmailtest.Start(t, gmailtest.WithEmail("me2@example.com"))
	srv.Latency = time.Millisecond // plain assignment before the first request
	svc := service(t, srv)
	id := srv.Add(rawMsg("a@x", "s", "b"), "INBOX")
	ops := []func() error{
		func() error { _, err := svc.Users.GetProfile("me2@example.com").Do(); return err },
		func() error { _, err := svc.Users.Labels.Get("me", "INBOX").Do(); return err },
		func() error { _, err := svc.Users.Messages.List("me").Do(); return err },
		func() error { _, err := svc.Users.Messages.Get("me", id).Format("raw").Do(); return err },
		func() error { _, err := svc.Users.Messages.Get("me", id).Format("minimal").Do(); return err },
		func() error { _, err := svc.Users.Messages.Trash("me", id).Do(); return err },
		func() error { _, err := svc.Users.Messages.Untrash("me", id).Do(); return err },
		func() error {
			_, err := svc.Users.Messages.Modify("me", id, &gmail.ModifyMessageRequest{AddLabelIds: []string{"UNREAD"}}).Do()
			return err
		},
		func() error {
			return svc.Users.Messages.BatchModify("me", &gmail.BatchModifyMessagesRequest{Ids: []string{id}, RemoveLabelIds: []string{"UNREAD"}}).Do()
		},
		func() error { _, err := svc.Users.History.List("me").StartHistoryId(srv.HistoryID()).Do(); return err },
	}
	for i, op := range ops {
		if err := op(); err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
	}
	// Failed requests count too.
	if err := svc.Users.Messages.Delete("me", id).Do(); err == nil {
		t.Fatal("delete without scope succeeded")
	}
	if err := svc.Users.Messages.BatchDelete("me", &gmail.BatchDeleteMessagesRequest{Ids: []string{id}}).Do(); err == nil {
		t.Fatal("batchDelete without scope succeeded")
	}
	want := map[string]int{
		"users.getProfile": 1, "users.labels.get": 1, "messages.list": 1, "messages.get": 2,
		"messages.trash": 1, "messages.untrash": 1, "messages.modify": 1, "messages.batchModify": 1,
		"history.list": 1, "messages.delete": 1, "messages.batchDelete": 1,
	}
	if got := srv.Calls(); !mapsEqual(got, want) {
		t.Errorf("calls %v", got)
	}
	if got := srv.Units(); got != 1+1+5+10+5+5+5+50+2+10+50 {
		t.Errorf("units %d", got)
	}
	if got := srv.MaxInFlight(); got != 1 {
		t.Errorf("max in flight %d", got)
	}
	srv.ResetStats()
	if len(srv.Calls()) != 0 || srv.Units() != 0 || srv.MaxInFlight() != 0 {
		t.Error("ResetStats")
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestMaxConcurrent(t *testing.T) {
	srv := gmailtest.Start(t)
	svc := service(t, srv)
	srv.SetLatency(150 * time.Millisecond)
	srv.SetMaxConcurrent(2)
	run := func(n int) (ok, limited int) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				_, err := svc.Users.GetProfile("me").Do()
				mu.Lock()
				defer mu.Unlock()
				var ge *googleapi.Error
				switch {
				case err == nil:
					ok++
				case errors.As(err, &ge) && ge.Code == 429 && ge.Message == "Too many concurrent requests for user":
					limited++
				default:
					t.Errorf("unexpected %v", err)
				}
			})
		}
		wg.Wait()
		return
	}
	start := time.Now()
	if ok, limited := run(6); ok != 2 || limited != 4 {
		t.Errorf("6 at once: %d ok, %d limited", ok, limited)
	}
	if time.Since(start) < 150*time.Millisecond {
		t.Error("latency not applied")
	}
	if srv.MaxInFlight() < 3 {
		t.Errorf("max in flight %d", srv.MaxInFlight())
	}
	srv.ResetStats()
	if ok, limited := run(2); ok != 2 || limited != 0 {
		t.Errorf("2 at once: %d ok, %d limited", ok, limited)
	}
	if srv.MaxInFlight() != 2 {
		t.Errorf("max in flight %d", srv.MaxInFlight())
	}
}

// TestUnknownPath: an unknown route answers the 404 envelope.
func TestUnknownPath(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := gmailtest.Start(t, gmailtest.WithListener(l))
	if srv.URL != "http://"+l.Addr().String() {
		t.Fatalf("URL %s, listener %s", srv.URL, l.Addr())
	}
	resp, err := http.Get(srv.URL + "/gmail/v1/users/me/drafts")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.Contains(string(body), `"reason":"notFound"`) ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Errorf("%d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}
