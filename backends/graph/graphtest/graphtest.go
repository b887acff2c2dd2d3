// Package graphtest is an in-memory fake of the Microsoft Graph mail
// endpoints popbridge uses (mail folders, messages delta, $value, move,
// PATCH isRead, DELETE, permanentDelete, $batch) and of the Microsoft
// identity platform's token endpoint, with the JSON shapes, headers and
// error envelopes of /work/shared/GRAPH.md, plus controls for tests:
// out-of-band mail changes, ids longer than 70 characters, a $value
// that changes from one fetch to the next, delta token expiry, latency,
// error injection, throttled $batch items, the 4-request concurrency
// limit and per-endpoint call counters.
package graphtest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Endpoint names, the keys of Calls.
const (
	EFolder      = "folder"       // GET mailFolders/{f}
	EChildren    = "childFolders" // GET mailFolders/{f}/childFolders
	EDelta       = "delta"        // GET mailFolders/{f}/messages/delta, its nextLinks and deltaLinks
	EValue       = "value"        // GET messages/{id}/$value
	EPatch       = "patch"        // PATCH messages/{id}
	EMove        = "move"         // POST messages/{id}/move
	EDelete      = "delete"       // DELETE messages/{id}
	EPurge       = "permanentDelete"
	EBatch       = "batch" // POST $batch (the envelope)
	EBatchItem   = "batch.item"
	EToken       = "token" // POST {tenant}/oauth2/v2.0/token
	immutableHdr = `IdType="ImmutableId"`
)

// idPrefix is what every immutable id seen starts with (GRAPH.md §3).
const idPrefix = "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A"

// WellKnown are the well-known folder names the fake knows.
var WellKnown = []string{"inbox", "archive", "deleteditems", "drafts", "junkemail", "sentitems", "outbox",
	"recoverableitemsdeletions", "msgfolderroot"}

// Server is the fake. Use the Set* methods while requests may be in
// flight.
type Server struct {
	URL string // scheme://host:port; the API is under URL+"/v1.0"

	srv *httptest.Server

	mu          sync.Mutex
	user        string // the mailbox's address; /users/{user} serves it
	longIDs     bool
	rewrite     bool
	maxConc     int
	retryAfter  string // on a concurrency 429
	latency     time.Duration
	pageSize    int // default delta page
	dupes       bool
	folders     map[string]*folder // by id
	msgs        map[string]*message
	seq         int // change sequence
	floor       int // delta tokens before it are expired
	next        int // message counter
	clock       time.Time
	fails       []*Failure
	batchFails  []*Failure
	calls       map[string]int
	inFlight    int
	peak        int
	noImmutable int
	fetches     map[string]int
	sent        []Sent

	// identity
	access   map[string]bool // valid access tokens
	refresh  map[string]bool // valid refresh tokens
	strict   bool            // only issued access tokens are valid
	revoked  bool            // the grant is revoked (AADSTS50173)
	tokenSeq int
}

type folder struct {
	id, name, parent string
	wellKnown        string
	log              []event
}

type event struct {
	seq     int
	id      string
	removed bool
}

type message struct {
	id       string
	folder   string
	raw      []byte
	received time.Time
	isRead   bool
	msgID    string
	purged   bool
}

// Message is a snapshot of a stored message.
type Message struct {
	ID       string
	Folder   string // the folder's well-known name, or its display name
	Raw      []byte
	Received time.Time
	IsRead   bool
	Purged   bool // permanently deleted (permanentDelete)
}

// Failure is an injected error answer.
type Failure struct {
	N          int    // how many requests to fail
	Endpoint   string // "" = any, else a Calls key
	Status     int
	Code       string // "" = the usual code for Status
	RetryAfter string // Retry-After header, if not empty
}

// Option configures New.
type Option func(*Server)

// WithLongIDs makes immutable ids 110 characters long, beyond POP3's 70.
func WithLongIDs() Option { return func(s *Server) { s.longIDs = true } }

// WithUser sets the mailbox's address (default user@contoso.com).
func WithUser(u string) Option { return func(s *Server) { s.user = u } }

// New starts a fake; the caller calls Close. It enforces Graph's limit of
// 4 concurrent requests (SetMaxConcurrent changes it).
func New(opts ...Option) *Server {
	s := &Server{
		user: "user@contoso.com", maxConc: 4, retryAfter: "0.05", pageSize: 10,
		folders: map[string]*folder{}, msgs: map[string]*message{}, calls: map[string]int{},
		fetches: map[string]int{}, access: map[string]bool{}, refresh: map[string]bool{},
		clock: time.Now().Add(-30 * 24 * time.Hour).UTC().Truncate(time.Second),
	}
	for _, o := range opts {
		o(s)
	}
	for i, n := range WellKnown {
		f := &folder{id: fmt.Sprintf("AQMkADYAAAIB%04dAAAA==", i), wellKnown: n, name: displayName(n), parent: "AQMkADYAAAIB0008AAAA=="}
		if n == "msgfolderroot" {
			f.parent = ""
		}
		s.folders[f.id] = f
	}
	s.srv = httptest.NewServer(s)
	s.URL = s.srv.URL
	return s
}

func displayName(n string) string {
	switch n {
	case "deleteditems":
		return "Deleted Items"
	case "junkemail":
		return "Junk Email"
	case "sentitems":
		return "Sent Items"
	case "msgfolderroot":
		return "Top of Information Store"
	}
	return strings.ToUpper(n[:1]) + n[1:]
}

// Start starts a fake that is closed when the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	s := New(opts...)
	t.Cleanup(s.Close)
	return s
}

// Close shuts the server down.
func (s *Server) Close() { s.srv.Close() }

// Endpoint is the API base URL (api_endpoint): URL + "/v1.0".
func (s *Server) Endpoint() string { return s.URL + "/v1.0" }

// TokenURL is the token endpoint of tenant.
func (s *Server) TokenURL(tenant string) string { return s.URL + "/" + tenant + "/oauth2/v2.0/token" }

// User is the mailbox's address.
func (s *Server) User() string { s.mu.Lock(); defer s.mu.Unlock(); return s.user }

// SetRewrite makes every $value answer differ from the last one (an
// added header that grows by a character each fetch), as regenerated
// MIME may.
func (s *Server) SetRewrite(b bool) { s.mu.Lock(); s.rewrite = b; s.mu.Unlock() }

// SetMaxConcurrent sets the concurrency limit (0 = none).
func (s *Server) SetMaxConcurrent(n int) { s.mu.Lock(); s.maxConc = n; s.mu.Unlock() }

// SetLatency delays every API request.
func (s *Server) SetLatency(d time.Duration) { s.mu.Lock(); s.latency = d; s.mu.Unlock() }

// SetPageSize sets the delta page size used without Prefer
// odata.maxpagesize (default 10).
func (s *Server) SetPageSize(n int) { s.mu.Lock(); s.pageSize = n; s.mu.Unlock() }

// SetDuplicates makes delta pages list every present message twice (as
// reported for messages moved into a folder).
func (s *Server) SetDuplicates(b bool) { s.mu.Lock(); s.dupes = b; s.mu.Unlock() }

// FailNext queues a failure; requests consume them in order.
func (s *Server) FailNext(f Failure) { s.mu.Lock(); s.fails = append(s.fails, &f); s.mu.Unlock() }

// FailBatchItems makes the next n $batch items answer status (429 with
// Retry-After retryAfter, or 424) inside a 200 envelope.
func (s *Server) FailBatchItems(n, status int, retryAfter string) {
	s.mu.Lock()
	s.batchFails = append(s.batchFails, &Failure{N: n, Status: status, RetryAfter: retryAfter})
	s.mu.Unlock()
}

// ExpireDelta expires every delta and skip token issued so far: they
// answer 410 SyncStateNotFound.
func (s *Server) ExpireDelta() { s.mu.Lock(); s.seq++; s.floor = s.seq; s.mu.Unlock() }

// Calls returns the requests per endpoint, failed ones included.
func (s *Server) Calls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := make(map[string]int, len(s.calls))
	for k, v := range s.calls {
		c[k] = v
	}
	return c
}

// MaxInFlight is the peak of concurrent API requests, rejected ones
// included.
func (s *Server) MaxInFlight() int { s.mu.Lock(); defer s.mu.Unlock(); return s.peak }

// WithoutImmutable counts the mail requests (and $batch items) that
// lacked Prefer: IdType="ImmutableId".
func (s *Server) WithoutImmutable() int { s.mu.Lock(); defer s.mu.Unlock(); return s.noImmutable }

// ResetStats zeroes Calls and MaxInFlight.
func (s *Server) ResetStats() {
	s.mu.Lock()
	s.calls, s.peak = map[string]int{}, s.inFlight
	s.mu.Unlock()
}

// ---------------------------------------------------------------------
// Mailbox controls.

// AddFolder creates a folder named name under parent (a well-known name
// or a folder id) and returns its id.
func (s *Server) AddFolder(parent, name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.folderLocked(parent)
	f := &folder{id: fmt.Sprintf("AAMkAGFolder%04dAAA=", len(s.folders)), name: name, parent: p.id}
	s.folders[f.id] = f
	return f.id
}

// Add delivers raw into folder (a well-known name or id), received a
// second after the previous message, and returns its immutable id.
func (s *Server) Add(folder string, raw []byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.folderLocked(folder)
	s.next++
	s.clock = s.clock.Add(time.Second)
	id := idPrefix + "AGnUPtcQC-Eiwmc39SmMpPgAAA" + fmt.Sprintf("%06dAA", s.next)
	if s.longIDs {
		id += strings.Repeat("QUJD", 10) + fmt.Sprintf("%02d", s.next%100)
	}
	m := &message{id: id, folder: f.id, raw: crlf(raw), received: s.clock, msgID: fmt.Sprintf("<%d@fake.example>", s.next)}
	s.msgs[id] = m
	s.logLocked(f, id, false)
	return id
}

// Move moves a message to folder, as another client would.
func (s *Server) Move(id, folder string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs[id]
	if m == nil || m.purged {
		return false
	}
	s.moveLocked(m, s.folderLocked(folder))
	return true
}

// Remove deletes a message for good, as another client would.
func (s *Server) Remove(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs[id]
	if m == nil || m.purged {
		return false
	}
	s.purgeLocked(m)
	return true
}

// Message returns a stored message.
func (s *Server) Message(id string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs[id]
	if m == nil {
		return Message{}, false
	}
	f := s.folders[m.folder]
	name := f.wellKnown
	if name == "" {
		name = f.name
	}
	return Message{ID: m.id, Folder: name, Raw: slices.Clone(m.raw), Received: m.received, IsRead: m.isRead, Purged: m.purged}, true
}

// IDs lists the messages in folder, oldest first.
func (s *Server) IDs(folder string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.folderLocked(folder)
	var out []*message
	for _, m := range s.msgs {
		if m.folder == f.id && !m.purged {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b *message) int { return a.received.Compare(b.received) })
	ids := make([]string, len(out))
	for i, m := range out {
		ids[i] = m.id
	}
	return ids
}

// Fetches is the number of $value downloads of a message.
func (s *Server) Fetches(id string) int { s.mu.Lock(); defer s.mu.Unlock(); return s.fetches[id] }

func (s *Server) folderLocked(name string) *folder {
	if f := s.folders[name]; f != nil {
		return f
	}
	for _, f := range s.folders {
		if f.wellKnown != "" && strings.EqualFold(f.wellKnown, name) {
			return f
		}
	}
	panic("graphtest: no folder " + name)
}

func (s *Server) logLocked(f *folder, id string, removed bool) {
	s.seq++
	f.log = append(f.log, event{seq: s.seq, id: id, removed: removed})
}

func (s *Server) moveLocked(m *message, to *folder) {
	if m.folder == to.id {
		return
	}
	s.logLocked(s.folders[m.folder], m.id, true)
	m.folder = to.id
	s.logLocked(to, m.id, false)
}

func (s *Server) purgeLocked(m *message) {
	s.logLocked(s.folders[m.folder], m.id, true)
	m.purged = true
}

// crlf turns bare LF and CR into CRLF, as Exchange's MIME writer sends.
func crlf(b []byte) []byte {
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return []byte(strings.ReplaceAll(s, "\n", "\r\n"))
}

// ---------------------------------------------------------------------
// HTTP.

// gerr is Graph's error envelope (GRAPH.md §8).
type gerr struct {
	Error struct {
		Code       string            `json:"code"`
		Message    string            `json:"message"`
		InnerError map[string]string `json:"innerError,omitempty"`
	} `json:"error"`
}

func errBody(status int, code string) gerr {
	var e gerr
	msg := ""
	switch status {
	case 401:
		code, msg = or(code, "InvalidAuthenticationToken"), "Access token has expired or is not yet valid."
	case 403:
		code, msg = or(code, "ErrorAccessDenied"), "Access is denied. Check credentials and try again."
	case 404:
		code, msg = or(code, "ErrorItemNotFound"), "The specified object was not found in the store."
	case 410:
		code, msg = or(code, "SyncStateNotFound"), "The sync state generation is not found; generation=149;[highest=157][157][155][156]."
	case 429:
		code, msg = or(code, "ApplicationThrottled"), "Application is over its MailboxConcurrency limit."
	case 400:
		code, msg = or(code, "BadRequest"), "Unable to read JSON request payload."
	default:
		code, msg = or(code, "ServiceUnavailable"), "Service unavailable."
	}
	e.Error.Code, e.Error.Message = code, msg
	if code != "ApplicationThrottled" {
		e.Error.InnerError = map[string]string{"request-id": "1137f277-0000-4000-8000-000000000000", "date": time.Now().UTC().Format("2006-01-02T15:04:05")}
	}
	return e
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8")
	w.Header().Set("request-id", "94fb3b52-0000-4000-8000-000000000000")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// ServeHTTP serves the API and the token endpoint.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token") {
		s.token(w, r)
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/v1.0/") {
		writeJSON(w, 404, errBody(400, "BadRequest"))
		return
	}
	s.mu.Lock()
	s.inFlight++
	s.peak = max(s.peak, s.inFlight)
	over := s.maxConc > 0 && s.inFlight > s.maxConc
	lat, ra := s.latency, s.retryAfter
	s.mu.Unlock()
	// A request stops counting once its answer starts: a client may send
	// the next one as soon as it has read this one.
	var once sync.Once
	done := func() { once.Do(func() { s.mu.Lock(); s.inFlight--; s.mu.Unlock() }) }
	defer done()
	w = &doneWriter{ResponseWriter: w, done: done}
	if lat > 0 {
		select {
		case <-time.After(lat):
		case <-r.Context().Done():
			return
		}
	}
	path := strings.TrimPrefix(r.URL.Path, "/v1.0")
	var body []byte
	if r.Body != nil {
		body, _ = readAll(r)
	}
	ep := endpointOf(r.Method, path)
	s.mu.Lock()
	s.calls[ep]++
	s.mu.Unlock()
	if !s.authorized(r.Header.Get("Authorization")) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize"`)
		writeJSON(w, 401, errBody(401, ""))
		return
	}
	if over {
		w.Header().Set("Retry-After", ra)
		writeJSON(w, 429, errBody(429, ""))
		return
	}
	if f := s.takeFail(&s.fails, ep); f != nil {
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		writeJSON(w, f.Status, errBody(f.Status, f.Code))
		return
	}
	if ep == EBatch {
		s.batch(w, body)
		return
	}
	if ep == ESend {
		s.sendMail(w, r, path, body)
		return
	}
	if !strings.Contains(r.Header.Get("Prefer"), immutableHdr) {
		s.mu.Lock()
		s.noImmutable++
		s.mu.Unlock()
	} else {
		w.Header().Set("Preference-Applied", "IdType=ImmutableId")
	}
	st, ct, out := s.serve(r.Method, path, r.URL.RawQuery, r.Header.Get("Prefer"), body)
	if ct == "" {
		if st == 204 {
			w.WriteHeader(204)
			return
		}
		writeJSON(w, st, out)
		return
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(st)
	w.Write(out.([]byte))
}

// doneWriter calls done before the answer is written.
type doneWriter struct {
	http.ResponseWriter
	done func()
}

func (d *doneWriter) WriteHeader(code int) { d.done(); d.ResponseWriter.WriteHeader(code) }

func (d *doneWriter) Write(p []byte) (int, error) { d.done(); return d.ResponseWriter.Write(p) }

func readAll(r *http.Request) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(r.Body)
	return b.Bytes(), err
}

func (s *Server) authorized(h string) bool {
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.strict || s.access[tok]
}

func (s *Server) takeFail(list *[]*Failure, ep string) *Failure {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range *list {
		if f.Endpoint == "" || f.Endpoint == ep {
			c := *f
			if f.N--; f.N <= 0 {
				*list = slices.Delete(*list, i, i+1)
			}
			return &c
		}
	}
	return nil
}

var (
	reMailbox  = regexp.MustCompile(`^/(me|users/[^/]+)(/.*)$`)
	reFolder   = regexp.MustCompile(`^/mail[Ff]olders(?:/([^/]+)|\('([^']+)'\))(/.*)?$`)
	reMessage  = regexp.MustCompile(`^/messages/([^/]+)(/.*)?$`)
	mailboxErr = errBody(404, "ErrorInvalidUser")
)

func endpointOf(method, path string) string {
	if path == "/$batch" {
		return EBatch
	}
	if strings.HasSuffix(path, "/sendMail") {
		return ESend
	}
	_, rest := splitMailbox(path)
	if m := reFolder.FindStringSubmatch(rest); m != nil {
		switch m[3] {
		case "":
			return EFolder
		case "/childFolders":
			return EChildren
		case "/messages/delta":
			return EDelta
		}
	}
	if m := reMessage.FindStringSubmatch(rest); m != nil {
		switch {
		case m[2] == "/$value":
			return EValue
		case m[2] == "/move":
			return EMove
		case m[2] == "/permanentDelete":
			return EPurge
		case method == http.MethodPatch:
			return EPatch
		case method == http.MethodDelete:
			return EDelete
		}
	}
	return "other"
}

func splitMailbox(path string) (string, string) {
	m := reMailbox.FindStringSubmatch(path)
	if m == nil {
		return "", path
	}
	return m[1], m[2]
}

// serve answers one mail request (also a $batch item): status, content
// type ("" = JSON of out), out.
func (s *Server) serve(method, path, rawQuery, prefer string, body []byte) (int, string, any) {
	mb, rest := splitMailbox(path)
	s.mu.Lock()
	defer s.mu.Unlock()
	if mb == "" {
		return 400, "", errBody(400, "BadRequest")
	}
	if u, ok := strings.CutPrefix(mb, "users/"); ok {
		if u, _ = url.PathUnescape(u); !strings.EqualFold(u, s.user) {
			return 404, "", mailboxErr
		}
	}
	q, _ := url.ParseQuery(rawQuery)
	if m := reFolder.FindStringSubmatch(rest); m != nil && method == http.MethodGet {
		key := m[1] + m[2]
		key, _ = url.PathUnescape(key)
		var f *folder
		if g := s.folders[key]; g != nil {
			f = g
		} else {
			for _, g := range s.folders {
				if g.wellKnown != "" && strings.EqualFold(g.wellKnown, key) {
					f = g
				}
			}
		}
		if f == nil {
			return 404, "", errBody(404, "ErrorInvalidIdMalformed")
		}
		switch m[3] {
		case "":
			return 200, "", s.folderJSON(f)
		case "/childFolders":
			return 200, "", s.children(f, q.Get("$filter"))
		case "/messages/delta":
			return s.delta(f, q, prefer)
		}
	}
	if m := reMessage.FindStringSubmatch(rest); m != nil {
		id, _ := url.PathUnescape(m[1])
		msg := s.msgs[id]
		if msg == nil || msg.purged {
			return 404, "", errBody(404, "")
		}
		switch {
		case m[2] == "/$value" && method == http.MethodGet:
			s.fetches[id]++
			raw := msg.raw
			if s.rewrite {
				raw = append([]byte("X-MS-Exchange-Regenerated: "+strings.Repeat("x", s.fetches[id])+"\r\n"), raw...)
			}
			return 200, "text/plain", slices.Clone(raw)
		case m[2] == "" && method == http.MethodPatch:
			var p struct {
				IsRead *bool `json:"isRead"`
			}
			if json.Unmarshal(body, &p) != nil || p.IsRead == nil {
				return 400, "", errBody(400, "")
			}
			if msg.isRead != *p.IsRead {
				msg.isRead = *p.IsRead
				s.logLocked(s.folders[msg.folder], id, false)
			}
			return 200, "", s.msgJSON(msg)
		case m[2] == "/move" && method == http.MethodPost:
			var p struct {
				DestinationID string `json:"destinationId"`
			}
			if json.Unmarshal(body, &p) != nil || p.DestinationID == "" {
				return 400, "", errBody(400, "")
			}
			var to *folder
			for _, f := range s.folders {
				if f.id == p.DestinationID || strings.EqualFold(f.wellKnown, p.DestinationID) {
					to = f
				}
			}
			if to == nil {
				return 404, "", errBody(404, "ErrorInvalidIdMalformed")
			}
			s.moveLocked(msg, to)
			return 201, "", s.msgJSON(msg)
		case m[2] == "" && method == http.MethodDelete:
			s.moveLocked(msg, s.folderLocked("recoverableitemsdeletions"))
			return 204, "", nil
		case m[2] == "/permanentDelete" && method == http.MethodPost:
			s.purgeLocked(msg)
			return 204, "", nil
		}
	}
	return 405, "", errBody(405, "ErrorInvalidRequest")
}

type folderJSON struct {
	ID               string `json:"id"`
	DisplayName      string `json:"displayName"`
	ParentFolderID   string `json:"parentFolderId"`
	ChildFolderCount int    `json:"childFolderCount"`
	UnreadItemCount  int    `json:"unreadItemCount"`
	TotalItemCount   int    `json:"totalItemCount"`
	IsHidden         bool   `json:"isHidden"`
}

func (s *Server) folderJSON(f *folder) folderJSON {
	j := folderJSON{ID: f.id, DisplayName: f.name, ParentFolderID: f.parent}
	for _, g := range s.folders {
		if g.parent == f.id {
			j.ChildFolderCount++
		}
	}
	for _, m := range s.msgs {
		if m.folder == f.id && !m.purged {
			j.TotalItemCount++
			if !m.isRead {
				j.UnreadItemCount++
			}
		}
	}
	return j
}

var reDisplayName = regexp.MustCompile(`^displayName eq '((?:[^']|'')*)'$`)

func (s *Server) children(f *folder, filter string) map[string]any {
	want, ok := "", false
	if m := reDisplayName.FindStringSubmatch(filter); m != nil {
		want, ok = strings.ReplaceAll(m[1], "''", "'"), true
	}
	out := []folderJSON{}
	for _, g := range s.folders {
		if g.parent == f.id && (!ok || g.name == want) {
			out = append(out, s.folderJSON(g))
		}
	}
	slices.SortFunc(out, func(a, b folderJSON) int { return strings.Compare(a.ID, b.ID) })
	return map[string]any{"@odata.context": s.URL + "/v1.0/$metadata#users('68ca8ec0')/mailFolders('" + f.id + "')/childFolders", "value": out}
}

type msgJSON struct {
	ETag              string `json:"@odata.etag,omitempty"`
	ID                string `json:"id"`
	ReceivedDateTime  string `json:"receivedDateTime,omitempty"`
	InternetMessageID string `json:"internetMessageId,omitempty"`
	IsRead            *bool  `json:"isRead,omitempty"`
	ParentFolderID    string `json:"parentFolderId,omitempty"`
}

func (s *Server) msgJSON(m *message) msgJSON {
	r := m.isRead
	return msgJSON{ETag: `W/"CQAAABYAAADHcgC8Hl9tRZ/hc1wEUs1TAAAwR4Hg"`, ID: m.id, ReceivedDateTime: m.received.Format(time.RFC3339),
		InternetMessageID: m.msgID, IsRead: &r, ParentFolderID: m.folder}
}

// deltaToken is what the fake packs into $skiptoken and $deltatoken.
type deltaToken struct {
	Since int  `json:"s"` // events after this sequence; -1 = a first round
	Upto  int  `json:"u"` // the sequence the round ends at
	Off   int  `json:"o"` // entries already sent in this round
	Page  int  `json:"p"`
	Size  bool `json:"x"` // $expand of PidTagMessageSize (Integer 0x0E08)
}

func (s *Server) delta(f *folder, q url.Values, prefer string) (int, string, any) {
	tok := deltaToken{Since: -1, Upto: s.seq, Page: s.pageSize}
	raw := q.Get("$skiptoken")
	if raw == "" {
		raw = q.Get("$deltatoken")
	}
	if raw != "" {
		b, err := base64.RawURLEncoding.DecodeString(raw)
		if err != nil || json.Unmarshal(b, &tok) != nil {
			return 400, "", errBody(400, "")
		}
		if tok.Upto < s.floor || (tok.Since >= 0 && tok.Since < s.floor) {
			return 410, "", errBody(410, "")
		}
		if q.Has("$deltatoken") { // a new round from the deltaLink
			tok = deltaToken{Since: tok.Upto, Upto: s.seq, Page: tok.Page, Size: tok.Size}
		}
	} else {
		if p := maxPageSize(prefer); p > 0 {
			tok.Page = p
		}
		tok.Size = strings.Contains(q.Get("$expand"), "Integer 0x0E08")
	}
	// The entries of the round: present messages in a first round, else
	// the last event per message after Since, up to Upto.
	type entry struct {
		id      string
		removed bool
	}
	var all []entry
	if tok.Since < 0 {
		var ms []*message
		for _, m := range s.msgs {
			if m.folder == f.id && !m.purged {
				ms = append(ms, m)
			}
		}
		slices.SortFunc(ms, func(a, b *message) int {
			if c := b.received.Compare(a.received); c != 0 {
				return c
			}
			return strings.Compare(a.id, b.id)
		})
		for _, m := range ms {
			all = append(all, entry{id: m.id})
		}
	} else {
		last := map[string]int{}
		for i, e := range f.log {
			if e.seq > tok.Since && e.seq <= tok.Upto {
				last[e.id] = i
			}
		}
		for i, e := range f.log {
			if j, ok := last[e.id]; ok && j == i {
				all = append(all, entry{id: e.id, removed: e.removed})
			}
		}
	}
	end := min(tok.Off+tok.Page, len(all))
	page := all[min(tok.Off, len(all)):end]
	value := []any{}
	for _, e := range page {
		m := s.msgs[e.id]
		if e.removed || m == nil || m.purged || m.folder != f.id {
			value = append(value, map[string]any{"@odata.type": "#microsoft.graph.message", "id": e.id, "@removed": map[string]string{"reason": "deleted"}})
			continue
		}
		var j any = s.msgJSON(m)
		if tok.Size {
			// PidTagMessageSize sums the sizes of all properties: an
			// estimate above the MIME's size.
			j = struct {
				msgJSON
				Props []map[string]string `json:"singleValueExtendedProperties"`
			}{s.msgJSON(m), []map[string]string{{"id": "Integer 0xe08", "value": strconv.Itoa(EstimatedSize(m.raw))}}}
		}
		value = append(value, j)
		if s.dupes {
			value = append(value, j)
		}
	}
	base := s.URL + "/v1.0/me/mailfolders('" + f.id + "')/messages/delta?"
	out := map[string]any{"@odata.context": s.URL + "/v1.0/$metadata#Collection(message)", "value": value}
	if end < len(all) {
		next := tok
		next.Off = end
		out["@odata.nextLink"] = base + "%24skiptoken=" + pack(next) // percent-encoded, as real links
	} else {
		out["@odata.deltaLink"] = base + "$deltatoken=" + pack(deltaToken{Since: tok.Since, Upto: tok.Upto, Page: tok.Page, Size: tok.Size})
	}
	return 200, "", out
}

// EstimatedSize is the PidTagMessageSize the fake reports for raw.
func EstimatedSize(raw []byte) int { return len(crlf(raw)) + 1500 }

func pack(t deltaToken) string {
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

func maxPageSize(prefer string) int {
	for _, p := range strings.Split(prefer, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(p), "odata.maxpagesize="); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// batch answers POST /$batch (GRAPH.md §9): at most 20 items, answered
// in reverse order, injected item failures first.
func (s *Server) batch(w http.ResponseWriter, body []byte) {
	var req struct {
		Requests []struct {
			ID      string            `json:"id"`
			Method  string            `json:"method"`
			URL     string            `json:"url"`
			Headers map[string]string `json:"headers"`
			Body    json.RawMessage   `json:"body"`
		} `json:"requests"`
	}
	if err := json.Unmarshal(body, &req); err != nil || len(req.Requests) == 0 || len(req.Requests) > 20 {
		writeJSON(w, 400, errBody(400, "BadRequest"))
		return
	}
	type item struct {
		ID      string            `json:"id"`
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers,omitempty"`
		Body    any               `json:"body,omitempty"`
	}
	var out []item
	for _, r := range req.Requests {
		if len(r.Body) > 0 && r.Headers["Content-Type"] == "" {
			out = append(out, item{ID: r.ID, Status: 400, Body: errBody(400, "BadRequest")})
			continue
		}
		s.mu.Lock()
		s.calls[EBatchItem]++
		if !strings.Contains(r.Headers["Prefer"], immutableHdr) {
			s.noImmutable++
		}
		s.mu.Unlock()
		if f := s.takeFail(&s.batchFails, ""); f != nil {
			it := item{ID: r.ID, Status: f.Status, Body: errBody(f.Status, f.Code)}
			if f.RetryAfter != "" {
				it.Headers = map[string]string{"Retry-After": f.RetryAfter}
			}
			out = append(out, it)
			continue
		}
		u, err := url.Parse(r.URL)
		if err != nil || !strings.HasPrefix(r.URL, "/") {
			out = append(out, item{ID: r.ID, Status: 400, Body: errBody(400, "BadRequest")})
			continue
		}
		st, _, res := s.serve(r.Method, u.Path, u.RawQuery, r.Headers["Prefer"], r.Body)
		it := item{ID: r.ID, Status: st}
		if st != 204 {
			it.Headers, it.Body = map[string]string{"Content-Type": "application/json"}, res
		}
		out = append(out, it)
	}
	slices.Reverse(out)
	writeJSON(w, 200, map[string]any{"responses": out})
}

// ---------------------------------------------------------------------
// Identity platform.

// ClientID is the only client the token endpoint knows.
const ClientID = "00000000-aaaa-bbbb-cccc-000000000001"

// Grant issues a refresh token (as a finished sign-in would) and makes
// the API accept only access tokens issued by the token endpoint.
func (s *Server) Grant() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.strict, s.revoked = true, false
	s.tokenSeq++
	rt := fmt.Sprintf("M.C5_rt.%d", s.tokenSeq)
	s.refresh[rt] = true
	return rt
}

// ExpireAccessTokens makes every access token issued so far answer 401.
func (s *Server) ExpireAccessTokens() { s.mu.Lock(); s.access = map[string]bool{}; s.mu.Unlock() }

// Revoke revokes the grant: refreshing gives invalid_grant AADSTS50173.
func (s *Server) Revoke() {
	s.mu.Lock()
	s.revoked, s.access, s.refresh = true, map[string]bool{}, map[string]bool{}
	s.mu.Unlock()
}

// token serves the refresh_token grant (GRAPH.md §13): every use rotates
// the refresh token; old ones stay valid.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[EToken]++
	fail := func(code, text string, n int) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(400)
		json.NewEncoder(w).Encode(map[string]any{"error": code,
			"error_description": fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: 0000\r\nCorrelation ID: 1111\r\nTimestamp: 2026-01-05 20:36:23Z", n, text),
			"error_codes":       []int{n}, "timestamp": "2026-01-05 20:36:23Z", "trace_id": "0000", "correlation_id": "1111",
			"error_uri": fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", n)})
	}
	switch {
	case r.PostForm.Get("client_id") != ClientID:
		fail("unauthorized_client", "Application not found in the directory.", 700016)
	case r.PostForm.Get("client_secret") != "":
		fail("invalid_client", "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.", 700025)
	case r.PostForm.Get("grant_type") != "refresh_token":
		fail("unsupported_grant_type", "The grant type is not supported.", 70003)
	case s.revoked:
		fail("invalid_grant", "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.", 50173)
	case !s.refresh[r.PostForm.Get("refresh_token")]:
		fail("invalid_grant", "The refresh token has expired due to inactivity.", 700082)
	default:
		s.tokenSeq++
		at := fmt.Sprintf("EwBIA8l6BAAU.access.%d", s.tokenSeq)
		rt := fmt.Sprintf("M.C5_rt.%d", s.tokenSeq)
		s.access[at], s.refresh[rt] = true, true
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		json.NewEncoder(w).Encode(map[string]any{"token_type": "Bearer", "scope": "https://graph.microsoft.com/Mail.ReadWrite",
			"expires_in": 3599, "ext_expires_in": 3599, "access_token": at, "refresh_token": rt})
	}
}
