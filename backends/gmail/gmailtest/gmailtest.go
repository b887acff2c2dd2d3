// Package gmailtest is an in-memory fake of the Gmail REST API (the
// subset popbridge uses: profile, labels.get, messages list/get/trash/
// untrash/modify/delete/batchModify/batchDelete and history.list), with
// the JSON shapes and error envelopes of /work/shared/GMAIL.md, plus
// controls for tests: out-of-band mail changes, latency, error
// injection, a concurrency limit, history expiry and call/quota
// accounting.
package gmailtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Method names used as keys of Calls.
const (
	MGetProfile  = "users.getProfile"
	MLabelsGet   = "users.labels.get"
	MList        = "messages.list"
	MGet         = "messages.get"
	MTrash       = "messages.trash"
	MUntrash     = "messages.untrash"
	MModify      = "messages.modify"
	MDelete      = "messages.delete"
	MBatchModify = "messages.batchModify"
	MBatchDelete = "messages.batchDelete"
	MHistoryList = "history.list"
)

// Cost is the quota cost in units of each method (GMAIL.md, section 1).
var Cost = map[string]int{
	MGetProfile: 1, MLabelsGet: 1, MList: 5, MGet: 5, MTrash: 5, MUntrash: 5,
	MModify: 5, MDelete: 10, MBatchModify: 50, MBatchDelete: 50, MHistoryList: 2,
}

// SystemLabels are the label ids that always exist (type "system").
var SystemLabels = []string{
	"INBOX", "SPAM", "TRASH", "UNREAD", "STARRED", "IMPORTANT", "SENT", "DRAFT", "CHAT",
	"CATEGORY_PERSONAL", "CATEGORY_SOCIAL", "CATEGORY_PROMOTIONS", "CATEGORY_UPDATES", "CATEGORY_FORUMS",
}

// Server is the fake. The exported configuration fields may be assigned
// before the first request; while requests may be in flight use the
// Set* methods (the handlers read the fields under the server's lock).
type Server struct {
	URL   string // base URL, no trailing slash
	Email string // the account; userId may be "me" or this

	// AllowDelete grants the full scope: without it messages.delete and
	// messages.batchDelete answer 403 insufficientPermissions (as with a
	// gmail.modify token).
	AllowDelete bool
	// ValidToken checks the bearer token; nil accepts any non-empty one.
	ValidToken func(token string) bool
	// MaxConcurrent (0 = unlimited) makes a request that arrives while
	// that many are in flight answer 429 "Too many concurrent requests
	// for user".
	MaxConcurrent int
	// Latency is added to every API request.
	Latency time.Duration

	srv      *httptest.Server
	listener net.Listener
	mux      *http.ServeMux

	mu        sync.Mutex
	rng       *rand.Rand
	clock     time.Time // internalDate of the next Add
	seq       uint64
	msgs      map[string]*message
	order     []*message // every message in messages.list order; nil after an Add
	gen       uint64     // bumped by every change to the messages or their labels
	listed    listCache  // the last messages.list filter's result
	historyID uint64
	floor     uint64 // start ids <= floor answer 404
	history   []record
	userLabel map[string]bool
	fails     []*Failure
	sent      []Sent
	calls     map[string]int
	units     int
	inFlight  int
	peak      int
}

type message struct {
	id        string
	date      time.Time // millisecond precision
	raw       []byte
	labels    map[string]bool
	historyID uint64
	unpadded  bool
	badRaw    bool // format=raw sends text that is not base64
	deleted   bool

	headers     []Header
	from, subj  string // decoded, lower case
	contentType string
	body        []byte
	snippet     string
}

// Header is one message header as in a payload's "headers".
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// record is one history record: a message added or deleted, or its
// labels changed (both added and removed labels in one record for
// trash/untrash/modify).
type record struct {
	id             uint64
	msg            string
	added, deleted bool
	labelsAdded    []string
	labelsRemoved  []string
	before, after  []string // the message's labels around the change
}

// Message is a snapshot of a stored message.
type Message struct {
	ID, ThreadID string
	Labels       []string // sorted
	Raw          []byte
	InternalDate time.Time
	HistoryID    uint64
	SizeEstimate int64
	Unpadded     bool // raw is sent unpadded (base64.RawURLEncoding)
	Deleted      bool // permanently deleted (messages.delete or Remove)
	Trashed      bool // carries TRASH
}

// Option configures New.
type Option func(*Server)

// WithEmail sets the account's address (default user@example.com).
func WithEmail(email string) Option { return func(s *Server) { s.Email = email } }

// WithListener serves on l instead of a new 127.0.0.1 port.
func WithListener(l net.Listener) Option { return func(s *Server) { s.listener = l } }

// WithClock sets the internalDate of the first Add (default: 30 days
// ago, whole seconds); each Add advances the clock by a second.
func WithClock(t time.Time) Option { return func(s *Server) { s.clock = t.Truncate(time.Millisecond) } }

// WithHistoryID sets the mailbox's initial historyId (default 100000 +
// a few). History before it is "forgotten" (404).
func WithHistoryID(id uint64) Option { return func(s *Server) { s.historyID = id } }

// New starts a fake; the caller calls Close.
func New(opts ...Option) *Server {
	s := &Server{
		Email:     "user@example.com",
		rng:       rand.New(rand.NewPCG(1, 2)),
		clock:     time.Now().Add(-30 * 24 * time.Hour).Truncate(time.Second),
		msgs:      map[string]*message{},
		userLabel: map[string]bool{},
		calls:     map[string]int{},
		historyID: 100000 + uint64(rand.IntN(1000)),
	}
	for _, o := range opts {
		o(s)
	}
	s.floor = s.historyID - 1
	s.routes()
	if s.listener != nil {
		s.srv = httptest.NewUnstartedServer(s)
		s.srv.Listener.Close()
		s.srv.Listener = s.listener
		s.srv.Start()
	} else {
		s.srv = httptest.NewServer(s)
	}
	s.URL = s.srv.URL
	return s
}

// Start starts a fake that is closed when the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	s := New(opts...)
	t.Cleanup(s.Close)
	return s
}

// Close shuts the server down.
func (s *Server) Close() { s.srv.Close() }

// Endpoint is the value for option.WithEndpoint: URL + "/".
func (s *Server) Endpoint() string { return s.URL + "/" }

// ServeHTTP serves the API (New already serves it on URL).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// SetAllowDelete, SetValidToken, SetMaxConcurrent and SetLatency change
// the configuration fields safely while requests may be in flight.
func (s *Server) SetAllowDelete(b bool) { s.mu.Lock(); s.AllowDelete = b; s.mu.Unlock() }

// SetValidToken: see SetAllowDelete.
func (s *Server) SetValidToken(f func(string) bool) { s.mu.Lock(); s.ValidToken = f; s.mu.Unlock() }

// SetMaxConcurrent: see SetAllowDelete.
func (s *Server) SetMaxConcurrent(n int) { s.mu.Lock(); s.MaxConcurrent = n; s.mu.Unlock() }

// SetLatency: see SetAllowDelete.
func (s *Server) SetLatency(d time.Duration) { s.mu.Lock(); s.Latency = d; s.mu.Unlock() }

// ---------------------------------------------------------------------
// Out-of-band controls.

// Add stores a message as delivered now (the fake's clock) with the
// given labels and returns its id.
func (s *Server) Add(raw []byte, labels ...string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.clock
	s.clock = s.clock.Add(time.Second)
	return s.addLocked(raw, t, labels)
}

// AddAt is Add with the given internalDate (millisecond precision). The
// clock moves past t if t is later.
func (s *Server) AddAt(raw []byte, t time.Time, labels ...string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	t = t.Truncate(time.Millisecond)
	if !t.Before(s.clock) {
		s.clock = t.Add(time.Second)
	}
	return s.addLocked(raw, t, labels)
}

// SetUnpadded makes format=raw send the message's raw unpadded.
func (s *Server) SetUnpadded(id string, unpadded bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs[id]
	if m == nil {
		return false
	}
	m.unpadded = unpadded
	return true
}

// SetBadRaw makes format=raw send, for the message, a raw field that is
// not base64 (a fault no real reply was seen to have).
func (s *Server) SetBadRaw(id string, bad bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs[id]
	if m == nil {
		return false
	}
	m.badRaw = bad
	return true
}

// Modify changes a message's labels as another client would (a history
// record if anything changed). It reports whether the message exists.
func (s *Server) Modify(id string, add, remove []string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs[id]
	if m == nil || m.deleted {
		return false
	}
	for _, l := range add {
		s.knowLabel(l)
	}
	s.changeLabels(m, add, remove)
	return true
}

// Remove deletes a message permanently as another client would (a
// messagesDeleted record). It reports whether the message existed.
func (s *Server) Remove(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs[id]
	if m == nil || m.deleted {
		return false
	}
	s.deleteLocked(m)
	return true
}

// Message returns a snapshot of a message, deleted ones included.
func (s *Server) Message(id string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs[id]
	if m == nil {
		return Message{}, false
	}
	return Message{
		ID: m.id, ThreadID: m.id, Labels: m.labelList(), Raw: bytes.Clone(m.raw),
		InternalDate: m.date, HistoryID: m.historyID, SizeEstimate: m.sizeEstimate(),
		Unpadded: m.unpadded, Deleted: m.deleted, Trashed: m.labels["TRASH"],
	}, true
}

// IDs returns the ids of the live messages carrying label ("" = all),
// oldest first (ascending internalDate, then id): the reverse of
// messages.list order.
func (s *Server) IDs(label string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, m := range s.sorted() {
		if label == "" || m.labels[label] {
			ids = append(ids, m.id)
		}
	}
	slices.Reverse(ids)
	return ids
}

// HistoryID is the mailbox's current historyId.
func (s *Server) HistoryID() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.historyID
}

// ExpireHistory forgets all history up to now: history.list with any
// startHistoryId issued so far answers 404. The mailbox historyId moves
// on, so a fresh getProfile gives a usable one.
func (s *Server) ExpireHistory() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.floor = s.historyID
	s.history = nil
	s.bump()
}

// Failure is an injected error answer.
type Failure struct {
	N          int    // how many requests to fail
	Method     string // "" = any method, else a Calls key (e.g. MGet)
	Status     int    // HTTP status
	Reason     string // "" = the usual reason for Status
	Message    string // "" = the GMAIL.md message for Status and Reason
	RetryAfter string // Retry-After header, if not empty
}

// FailNext makes the next n API requests answer status with the
// GMAIL.md envelope for (status, reason) — reason "" picks the usual one:
// 429 rateLimitExceeded "Too many concurrent requests for user", 403
// rateLimitExceeded/userRateLimitExceeded/dailyLimitExceeded, 500/503
// backendError — and the Retry-After header when retryAfter is not empty.
func (s *Server) FailNext(n, status int, reason, retryAfter string) {
	s.FailNextWith(Failure{N: n, Status: status, Reason: reason, RetryAfter: retryAfter})
}

// FailNextWith queues a failure; requests consume queued failures in
// order, each from the first one whose Method matches.
func (s *Server) FailNextWith(f Failure) {
	if f.N <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fails = append(s.fails, &f)
}

// Calls returns the number of requests per method, failed ones included.
func (s *Server) Calls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := make(map[string]int, len(s.calls))
	for k, v := range s.calls {
		c[k] = v
	}
	return c
}

// Units returns the quota units of all requests (Cost), failed ones
// included.
func (s *Server) Units() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.units
}

// MaxInFlight is the peak number of concurrent API requests seen,
// counting those rejected by MaxConcurrent.
func (s *Server) MaxInFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// ResetStats zeroes Calls, Units and MaxInFlight.
func (s *Server) ResetStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = map[string]int{}
	s.units = 0
	s.peak = s.inFlight
}

// ---------------------------------------------------------------------
// Mailbox state (all called with s.mu held).

func (s *Server) bump() uint64 {
	s.historyID += 1 + uint64(s.rng.IntN(9))
	return s.historyID
}

func isSystem(l string) bool { return slices.Contains(SystemLabels, l) }

func (s *Server) knowLabel(l string) {
	if !isSystem(l) {
		s.userLabel[l] = true
	}
}

func (s *Server) labelExists(l string) bool { return isSystem(l) || s.userLabel[l] }

func (s *Server) addLocked(raw []byte, t time.Time, labels []string) string {
	ms := uint64(t.UnixMilli())
	var id string
	for {
		s.seq++
		id = fmt.Sprintf("%016x", ms<<20|s.seq&0xfffff)
		if s.msgs[id] == nil {
			break
		}
	}
	m := &message{id: id, date: t, raw: bytes.Clone(raw), labels: map[string]bool{}}
	for _, l := range labels {
		s.knowLabel(l)
		m.labels[l] = true
	}
	m.parse()
	s.msgs[id] = m
	s.order = nil
	s.gen++
	h := s.bump()
	m.historyID = h
	s.history = append(s.history, record{id: h, msg: id, added: true, after: m.labelList()})
	return id
}

// changeLabels applies add then remove; a change is recorded.
func (s *Server) changeLabels(m *message, add, remove []string) {
	before := m.labelList()
	var added, removed []string
	for _, l := range add {
		if !m.labels[l] && !slices.Contains(remove, l) {
			m.labels[l] = true
			added = append(added, l)
		}
	}
	for _, l := range remove {
		if m.labels[l] {
			delete(m.labels, l)
			removed = append(removed, l)
		}
	}
	if len(added) == 0 && len(removed) == 0 {
		return
	}
	s.gen++
	h := s.bump()
	m.historyID = h
	s.history = append(s.history, record{id: h, msg: m.id, labelsAdded: added, labelsRemoved: removed,
		before: before, after: m.labelList()})
}

func (s *Server) deleteLocked(m *message) {
	m.deleted = true
	s.gen++
	h := s.bump()
	m.historyID = h
	s.history = append(s.history, record{id: h, msg: m.id, deleted: true, before: m.labelList()})
}

// sorted returns the live messages in messages.list order: newest
// internalDate first, ties by id descending. The order is kept until
// the next Add, so that paging through a large mailbox stays cheap.
func (s *Server) sorted() []*message {
	if s.order == nil {
		s.order = make([]*message, 0, len(s.msgs))
		for _, m := range s.msgs {
			s.order = append(s.order, m)
		}
		slices.SortFunc(s.order, func(a, b *message) int {
			if c := b.date.Compare(a.date); c != 0 {
				return c
			}
			return strings.Compare(b.id, a.id)
		})
	}
	ms := make([]*message, 0, len(s.order))
	for _, m := range s.order {
		if !m.deleted {
			ms = append(ms, m)
		}
	}
	return ms
}

func (m *message) labelList() []string {
	l := make([]string, 0, len(m.labels))
	for k := range m.labels {
		l = append(l, k)
	}
	slices.Sort(l)
	return l
}

func (m *message) sizeEstimate() int64 {
	n := int64(len(m.raw))
	return n + 40 + n/50
}

// parse extracts the headers, body and a snippet, tolerating anything.
func (m *message) parse() {
	raw := m.raw
	head, body := raw, []byte(nil)
	if i := bytes.Index(raw, []byte("\r\n\r\n")); i >= 0 {
		head, body = raw[:i], raw[i+4:]
	} else if i := bytes.Index(raw, []byte("\n\n")); i >= 0 {
		head, body = raw[:i], raw[i+2:]
	}
	for _, line := range strings.Split(strings.ReplaceAll(string(head), "\r\n", "\n"), "\n") {
		if (strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")) && len(m.headers) > 0 {
			m.headers[len(m.headers)-1].Value += " " + strings.TrimSpace(line)
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		m.headers = append(m.headers, Header{Name: strings.TrimSpace(name), Value: strings.TrimSpace(value)})
	}
	dec := new(mime.WordDecoder)
	for _, h := range m.headers {
		v, err := dec.DecodeHeader(h.Value)
		if err != nil {
			v = h.Value
		}
		switch strings.ToLower(h.Name) {
		case "from":
			m.from = strings.ToLower(v)
		case "subject":
			m.subj = strings.ToLower(v)
		case "content-type":
			if mt, _, err := mime.ParseMediaType(h.Value); err == nil {
				m.contentType = mt
			}
		}
	}
	if m.contentType == "" {
		m.contentType = "text/plain"
	}
	m.body = body
	snip := strings.Join(strings.Fields(string(body)), " ")
	if r := []rune(snip); len(r) > 100 {
		snip = string(r[:100])
	}
	m.snippet = snip
}

// ---------------------------------------------------------------------
// JSON shapes (GMAIL.md section 1).

type msgJSON struct {
	ID           string   `json:"id"`
	ThreadID     string   `json:"threadId"`
	LabelIDs     []string `json:"labelIds,omitempty"`
	Snippet      string   `json:"snippet,omitempty"`
	Payload      *part    `json:"payload,omitempty"`
	SizeEstimate int64    `json:"sizeEstimate"`
	HistoryID    string   `json:"historyId"`
	InternalDate string   `json:"internalDate"`
	Raw          string   `json:"raw,omitempty"`
}

type part struct {
	PartID   string    `json:"partId"`
	MimeType string    `json:"mimeType"`
	Filename string    `json:"filename"`
	Headers  []Header  `json:"headers"`
	Body     *partBody `json:"body,omitempty"`
}

type partBody struct {
	Size int    `json:"size"`
	Data string `json:"data,omitempty"`
}

type idJSON struct {
	ID       string   `json:"id"`
	ThreadID string   `json:"threadId"`
	LabelIDs []string `json:"labelIds,omitempty"`
}

type msgWrap struct {
	Message idJSON `json:"message"`
}

type labelChange struct {
	Message  idJSON   `json:"message"`
	LabelIDs []string `json:"labelIds"`
}

type historyJSON struct {
	ID              string        `json:"id"`
	Messages        []idJSON      `json:"messages,omitempty"`
	MessagesAdded   []msgWrap     `json:"messagesAdded,omitempty"`
	MessagesDeleted []msgWrap     `json:"messagesDeleted,omitempty"`
	LabelsAdded     []labelChange `json:"labelsAdded,omitempty"`
	LabelsRemoved   []labelChange `json:"labelsRemoved,omitempty"`
}

func u64(n uint64) string { return strconv.FormatUint(n, 10) }

func (m *message) minimal() *msgJSON {
	return &msgJSON{
		ID: m.id, ThreadID: m.id, LabelIDs: m.labelList(), SizeEstimate: m.sizeEstimate(),
		HistoryID: u64(m.historyID), InternalDate: strconv.FormatInt(m.date.UnixMilli(), 10),
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// ---------------------------------------------------------------------
// Errors (the Google JSON envelope).

type errItem struct {
	Message      string `json:"message"`
	Domain       string `json:"domain"`
	Reason       string `json:"reason"`
	LocationType string `json:"locationType,omitempty"`
	Location     string `json:"location,omitempty"`
}

type errBody struct {
	Code    int       `json:"code"`
	Message string    `json:"message"`
	Errors  []errItem `json:"errors"`
}

const (
	msgConcurrent = "Too many concurrent requests for user"
	msgNotFound   = "Requested entity was not found."
	msgQuota      = "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user' of service 'gmail.googleapis.com' for consumer 'project_number:123'."
	msgScope      = "Request had insufficient authentication scopes."
)

// envelope builds the GMAIL.md error for status and reason (either may
// pick the default); message "" picks the usual text.
func envelope(status int, reason, message string) errBody {
	item := errItem{Domain: "global", Reason: reason}
	top := ""
	switch status {
	case 400:
		item.Reason, top = or(reason, "invalidArgument"), "Invalid argument"
	case 401:
		item = errItem{Domain: "global", Reason: or(reason, "authError"), LocationType: "header", Location: "Authorization"}
		top = "Invalid Credentials"
	case 403:
		item.Reason = or(reason, "rateLimitExceeded")
		switch item.Reason {
		case "rateLimitExceeded":
			item.Domain, top = "usageLimits", msgQuota
		case "userRateLimitExceeded":
			item.Domain, top = "usageLimits", "User Rate Limit Exceeded"
		case "dailyLimitExceeded":
			item.Domain, top = "usageLimits", "Daily Limit Exceeded"
		case "insufficientPermissions":
			top, item.Message = msgScope, "Insufficient Permission"
		default:
			top = "Forbidden"
		}
	case 404:
		item.Reason, top = or(reason, "notFound"), msgNotFound
	case 429:
		item.Reason, top = or(reason, "rateLimitExceeded"), msgConcurrent
	case 500:
		item.Reason, top = or(reason, "backendError"), "Backend Error"
	case 503:
		item.Reason, top = or(reason, "backendError"), "The service is currently unavailable."
	default:
		item.Reason, top = or(reason, "unknown"), http.StatusText(status)
	}
	if message != "" {
		top = message
	}
	if item.Message == "" {
		item.Message = top
	}
	return errBody{Code: status, Message: top, Errors: []errItem{item}}
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func writeError(w http.ResponseWriter, status int, reason, message string) {
	if status == 401 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="https://accounts.google.com/"`)
	}
	writeJSON(w, status, map[string]errBody{"error": envelope(status, reason, message)})
}

func badRequest(w http.ResponseWriter, message string) {
	writeError(w, 400, "invalidArgument", message)
}

func notFound(w http.ResponseWriter) { writeError(w, 404, "notFound", "") }
