package graphtest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/popbridge/popbridge/backends/graph/graphtest"
)

const prefer = `IdType="ImmutableId"`

func do(t *testing.T, method, u, pref, body string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer x")
	if pref != "" {
		req.Header.Set("Prefer", pref)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

type page struct {
	Value []struct {
		ID      string          `json:"id"`
		Removed json.RawMessage `json:"@removed"`
	} `json:"value"`
	NextLink  string `json:"@odata.nextLink"`
	DeltaLink string `json:"@odata.deltaLink"`
}

// round follows nextLinks to the deltaLink and returns present and
// removed ids.
func round(t *testing.T, u string) (present, removed []string, deltaLink string, pages int) {
	t.Helper()
	for {
		st, _, b := do(t, "GET", u, prefer+", odata.maxpagesize=3", "")
		if st != 200 {
			t.Fatalf("delta %s: %d %s", u, st, b)
		}
		var p page
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatal(err)
		}
		pages++
		for _, v := range p.Value {
			if v.Removed != nil {
				removed = append(removed, v.ID)
			} else {
				present = append(present, v.ID)
			}
		}
		if p.DeltaLink != "" {
			return present, removed, p.DeltaLink, pages
		}
		if !strings.Contains(p.NextLink, "%24skiptoken=") && !strings.Contains(p.NextLink, "$skiptoken=") {
			t.Fatalf("nextLink %q", p.NextLink)
		}
		u = p.NextLink
	}
}

func TestDeltaPagingRemovedAndExpiry(t *testing.T) {
	s := graphtest.Start(t, graphtest.WithLongIDs())
	var ids []string
	for i := range 7 {
		ids = append(ids, s.Add("inbox", []byte("Subject: "+string(rune('a'+i))+"\n\nbody\n")))
	}
	if len(ids[0]) <= 70 {
		t.Fatalf("long id has %d characters", len(ids[0]))
	}
	present, removed, dl, pages := round(t, s.Endpoint()+"/me/mailFolders/inbox/messages/delta?$select=id,receivedDateTime")
	if len(present) != 7 || len(removed) != 0 || pages != 3 {
		t.Fatalf("first round: %d present, %d removed, %d pages", len(present), len(removed), pages)
	}
	if !strings.Contains(dl, "mailfolders('") {
		t.Errorf("deltaLink %q lacks the key syntax", dl)
	}
	// No change: one page, nothing.
	present, removed, dl2, pages := round(t, dl)
	if len(present)+len(removed) != 0 || pages != 1 {
		t.Fatalf("idle round: %v %v in %d pages", present, removed, pages)
	}
	s.Move(ids[0], "archive")
	s.Remove(ids[1])
	n := s.Add("inbox", []byte("Subject: new\n\n"))
	present, removed, dl3, _ := round(t, dl2)
	if strings.Join(present, ",") != n || len(removed) != 2 {
		t.Fatalf("changes: present %v removed %v", present, removed)
	}
	// The archive's own delta shows the moved message.
	ap, _, _, _ := round(t, s.Endpoint()+"/me/mailFolders/archive/messages/delta")
	if len(ap) != 1 || ap[0] != ids[0] {
		t.Fatalf("archive: %v", ap)
	}
	s.ExpireDelta()
	st, _, b := do(t, "GET", dl3, prefer, "")
	if st != 410 || !strings.Contains(string(b), `"SyncStateNotFound"`) {
		t.Fatalf("expired token: %d %s", st, b)
	}
	if s.WithoutImmutable() != 0 {
		t.Errorf("%d requests without the immutable id preference", s.WithoutImmutable())
	}
}

func TestValueCRLFAndRewrite(t *testing.T) {
	s := graphtest.Start(t)
	id := s.Add("inbox", []byte("Subject: x\n\nline\n"))
	u := s.Endpoint() + "/me/messages/" + url.PathEscape(id) + "/$value"
	st, h, b := do(t, "GET", u, prefer, "")
	if st != 200 || string(b) != "Subject: x\r\n\r\nline\r\n" || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Fatalf("$value: %d %q %v", st, b, h)
	}
	s.SetRewrite(true)
	_, _, b1 := do(t, "GET", u, prefer, "")
	_, _, b2 := do(t, "GET", u, prefer, "")
	if len(b1) == len(b2) || len(b1) == len(b) {
		t.Fatalf("rewrite: lengths %d %d %d", len(b), len(b1), len(b2))
	}
	if s.Fetches(id) != 3 {
		t.Errorf("fetches %d", s.Fetches(id))
	}
}

func TestBatchThrottleAndActions(t *testing.T) {
	s := graphtest.Start(t)
	a := s.Add("inbox", []byte("Subject: a\n\n"))
	b := s.Add("inbox", []byte("Subject: b\n\n"))
	c := s.Add("inbox", []byte("Subject: c\n\n"))
	s.FailBatchItems(1, 429, "0.5")
	item := func(id, method, path, body string) string {
		h := `{"Prefer":"IdType=\"ImmutableId\""}`
		if body != "" {
			h = `{"Prefer":"IdType=\"ImmutableId\"","Content-Type":"application/json"}`
			body = `,"body":` + body
		}
		return `{"id":"` + id + `","method":"` + method + `","url":"` + path + `","headers":` + h + body + `}`
	}
	req := `{"requests":[` + item("1", "POST", "/me/messages/"+a+"/move", `{"destinationId":"deleteditems"}`) + "," +
		item("2", "PATCH", "/me/messages/"+b, `{"isRead":true}`) + "," +
		item("3", "POST", "/me/messages/"+c+"/permanentDelete", "") + "]}"
	st, _, body := do(t, "POST", s.Endpoint()+"/$batch", "", req)
	if st != 200 {
		t.Fatalf("batch: %d %s", st, body)
	}
	var resp struct {
		Responses []struct {
			ID      string            `json:"id"`
			Status  int               `json:"status"`
			Headers map[string]string `json:"headers"`
		} `json:"responses"`
	}
	json.Unmarshal(body, &resp)
	got := map[string]int{}
	for _, r := range resp.Responses {
		got[r.ID] = r.Status
		if r.Status == 429 && r.Headers["Retry-After"] != "0.5" {
			t.Errorf("429 item without Retry-After: %v", r.Headers)
		}
	}
	if got["1"] != 429 || got["2"] != 200 || got["3"] != 204 || resp.Responses[0].ID != "3" {
		t.Fatalf("batch answers %v (order %v)", got, resp.Responses)
	}
	if m, _ := s.Message(b); !m.IsRead {
		t.Error("b not read")
	}
	if m, _ := s.Message(c); !m.Purged {
		t.Error("c not purged")
	}
	if m, _ := s.Message(a); m.Folder != "inbox" {
		t.Error("throttled move applied")
	}
	var many []string
	for i := range 21 {
		many = append(many, item(string(rune('a'+i)), "PATCH", "/me/messages/"+a, `{"isRead":true}`))
	}
	if st, _, _ := do(t, "POST", s.Endpoint()+"/$batch", "", `{"requests":[`+strings.Join(many, ",")+`]}`); st != 400 {
		t.Errorf("21-item batch: %d", st)
	}
}

func TestConcurrencyLimit(t *testing.T) {
	s := graphtest.Start(t)
	s.SetLatency(50e6)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for range 8 {
		wg.Go(func() {
			st, h, _ := do(t, "GET", s.Endpoint()+"/me/mailFolders/inbox", prefer, "")
			mu.Lock()
			codes[st]++
			if st == 429 && h.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[200] < 4 || codes[429] == 0 || s.MaxInFlight() < 5 {
		t.Fatalf("8 parallel requests: %v, peak %d", codes, s.MaxInFlight())
	}
}

func TestTokenRotation(t *testing.T) {
	s := graphtest.Start(t)
	rt := s.Grant()
	if st, _, _ := do(t, "GET", s.Endpoint()+"/me/mailFolders/inbox", prefer, ""); st != 401 {
		t.Fatalf("unissued token: %d", st)
	}
	form := func(rt string) (map[string]any, int) {
		resp, err := http.PostForm(s.TokenURL("consumers"), url.Values{"client_id": {graphtest.ClientID}, "grant_type": {"refresh_token"}, "refresh_token": {rt}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return m, resp.StatusCode
	}
	m, st := form(rt)
	if st != 200 || m["refresh_token"] == rt || m["refresh_token"] == "" {
		t.Fatalf("refresh: %d %v", st, m)
	}
	if _, st := form(rt); st != 200 {
		t.Errorf("old refresh token refused: %d", st)
	}
	s.Revoke()
	if m, st := form(m["refresh_token"].(string)); st != 400 || m["error"] != "invalid_grant" {
		t.Errorf("revoked: %d %v", st, m)
	}
}
