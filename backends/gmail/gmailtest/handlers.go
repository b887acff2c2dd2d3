package gmailtest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

const base = "/gmail/v1/users/{u}"

func (s *Server) routes() {
	s.mux = http.NewServeMux()
	s.route("GET "+base+"/profile", MGetProfile, s.getProfile)
	s.route("GET "+base+"/labels/{id}", MLabelsGet, s.getLabel)
	s.route("GET "+base+"/messages", MList, s.listMessages)
	s.route("GET "+base+"/messages/{id}", MGet, s.getMessage)
	s.route("POST "+base+"/messages/{id}/trash", MTrash, s.trash)
	s.route("POST "+base+"/messages/{id}/untrash", MUntrash, s.untrash)
	s.route("POST "+base+"/messages/{id}/modify", MModify, s.modify)
	s.route("DELETE "+base+"/messages/{id}", MDelete, s.delete)
	s.route("POST "+base+"/messages/batchModify", MBatchModify, s.batchModify)
	s.route("POST "+base+"/messages/batchDelete", MBatchDelete, s.batchDelete)
	s.route("GET "+base+"/history", MHistoryList, s.listHistory)
	s.sendRoutes()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { notFound(w) })
}

// route wraps h with accounting, the concurrency limit, latency, auth,
// the userId check and injected failures, in that order.
func (s *Server) route(pattern, name string, h http.HandlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.calls[name]++
		s.units += Cost[name]
		s.inFlight++
		s.peak = max(s.peak, s.inFlight)
		over := s.MaxConcurrent > 0 && s.inFlight > s.MaxConcurrent
		latency, valid, email := s.Latency, s.ValidToken, s.Email
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.inFlight--
			s.mu.Unlock()
		}()
		if over {
			writeError(w, 429, "rateLimitExceeded", msgConcurrent)
			return
		}
		if latency > 0 {
			t := time.NewTimer(latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" || valid != nil && !valid(tok) {
			writeError(w, 401, "authError", "")
			return
		}
		if u := r.PathValue("u"); u != "me" && !strings.EqualFold(u, email) {
			writeError(w, 403, "forbidden", "Delegation denied for "+email)
			return
		}
		if f := s.takeFailure(name); f != nil {
			if f.RetryAfter != "" {
				w.Header().Set("Retry-After", f.RetryAfter)
			}
			writeError(w, f.Status, f.Reason, f.Message)
			return
		}
		h(w, r)
	})
}

func (s *Server) takeFailure(name string) *Failure {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.fails {
		if f.Method == "" || f.Method == name {
			c := *f
			if f.N--; f.N <= 0 {
				s.fails = slices.Delete(s.fails, i, i+1)
			}
			return &c
		}
	}
	return nil
}

// live returns the message named in the path, or answers 404.
// Called with s.mu held.
func (s *Server) live(w http.ResponseWriter, r *http.Request) *message {
	m := s.msgs[r.PathValue("id")]
	if m == nil || m.deleted {
		notFound(w)
		return nil
	}
	return m
}

func (s *Server) getProfile(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.sorted())
	writeJSON(w, 200, map[string]any{
		"emailAddress": s.Email, "messagesTotal": n, "threadsTotal": n, "historyId": u64(s.historyID),
	})
}

func (s *Server) getLabel(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := r.PathValue("id")
	if !s.labelExists(id) {
		notFound(w)
		return
	}
	total, unread := 0, 0
	for _, m := range s.msgs {
		if !m.deleted && m.labels[id] {
			total++
			if m.labels["UNREAD"] {
				unread++
			}
		}
	}
	typ := "user"
	if isSystem(id) {
		typ = "system"
	}
	writeJSON(w, 200, map[string]any{
		"id": id, "name": id, "type": typ, "messagesTotal": total, "messagesUnread": unread,
		"threadsTotal": total, "threadsUnread": unread,
	})
}

// maxResults parses maxResults: default 100, clamped to [1, 500].
func maxResults(r *http.Request) (int, bool) {
	v := r.URL.Query().Get("maxResults")
	if v == "" {
		return 100, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, false
	}
	if n == 0 {
		n = 100
	}
	return min(n, 500), true
}

func encodeToken(s string) string { return base64.RawURLEncoding.EncodeToString([]byte("t1:" + s)) }

func decodeToken(t string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(t)
	if err != nil {
		return "", false
	}
	return strings.CutPrefix(string(b), "t1:")
}

func (s *Server) listMessages(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, ok := maxResults(r)
	if !ok {
		badRequest(w, "Invalid value for maxResults")
		return
	}
	terms, err := parseQuery(q.Get("q"))
	if err != nil {
		badRequest(w, "Invalid query")
		return
	}
	labels := q["labelIds"]
	spamTrash := q.Get("includeSpamTrash") == "true"
	// Naming SPAM or TRASH explicitly (labelIds or label:) lists them, as
	// Gmail does.
	explicit := map[string]bool{}
	for _, l := range labels {
		explicit[l] = true
	}
	for _, t := range terms {
		if t.key == "label" {
			explicit[strings.ToUpper(t.val)] = true
		}
	}
	var after *[2]string // (internalDate ms, id) of the last item already returned
	if tok := q.Get("pageToken"); tok != "" {
		v, ok := decodeToken(tok)
		ms, id, ok2 := strings.Cut(v, ":")
		if !ok || !ok2 {
			badRequest(w, "Invalid pageToken")
			return
		}
		after = &[2]string{ms, id}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := fmt.Sprintf("%q %q %v", labels, q.Get("q"), spamTrash)
	if s.listed.key != key || s.listed.gen != s.gen || s.listed.match == nil {
		match := []*message{}
		for _, m := range s.sorted() {
			if !spamTrash && (m.labels["SPAM"] && !explicit["SPAM"] || m.labels["TRASH"] && !explicit["TRASH"]) {
				continue
			}
			if !hasAll(m, labels) || !matchTerms(m, terms) {
				continue
			}
			match = append(match, m)
		}
		// Kept until the next change, so that paging through a large
		// mailbox costs one filtering.
		s.listed = listCache{key: key, gen: s.gen, match: match}
	}
	match := s.listed.match
	start := 0
	if after != nil {
		ms, _ := strconv.ParseInt(after[0], 10, 64)
		// match is newest first: the first item older than the last one
		// returned.
		start = sort.Search(len(match), func(i int) bool {
			d := match[i].date.UnixMilli()
			return d < ms || d == ms && match[i].id < after[1]
		})
	}
	end := min(start+limit, len(match))
	resp := struct {
		Messages           []idJSON `json:"messages,omitempty"`
		NextPageToken      string   `json:"nextPageToken,omitempty"`
		ResultSizeEstimate int      `json:"resultSizeEstimate"`
	}{ResultSizeEstimate: len(match)}
	for _, m := range match[start:end] {
		resp.Messages = append(resp.Messages, idJSON{ID: m.id, ThreadID: m.id})
	}
	if end < len(match) {
		last := match[end-1]
		resp.NextPageToken = encodeToken(fmt.Sprintf("%d:%s", last.date.UnixMilli(), last.id))
	}
	writeJSON(w, 200, resp)
}

// listCache is the result of one messages.list filter at one
// generation of the mailbox.
type listCache struct {
	key   string
	gen   uint64
	match []*message
}

func hasAll(m *message, labels []string) bool {
	for _, l := range labels {
		if !m.labels[l] {
			return false
		}
	}
	return true
}

type term struct {
	key, val string
	ms       int64 // after/before
}

// parseQuery parses the supported subset of Gmail search: whitespace
// separated key:value terms (a value may be "double quoted").
func parseQuery(q string) ([]term, error) {
	var terms []term
	for q = strings.TrimSpace(q); q != ""; q = strings.TrimSpace(q) {
		key, rest, ok := strings.Cut(q, ":")
		if !ok || strings.ContainsAny(key, " \t\r\n\"") {
			return nil, fmt.Errorf("bad term")
		}
		var val string
		if strings.HasPrefix(rest, `"`) {
			end := strings.Index(rest[1:], `"`)
			if end < 0 {
				return nil, fmt.Errorf("unterminated quote")
			}
			val, q = rest[1:1+end], rest[2+end:]
		} else if i := strings.IndexAny(rest, " \t\r\n"); i >= 0 {
			val, q = rest[:i], rest[i:]
		} else {
			val, q = rest, ""
		}
		t := term{key: strings.ToLower(key), val: val}
		switch t.key {
		case "after", "before":
			if n, err := strconv.ParseInt(val, 10, 64); err == nil {
				t.ms = n * 1000
			} else if d, err := time.Parse("2006/1/2", val); err == nil {
				t.ms = d.UnixMilli()
			} else {
				return nil, fmt.Errorf("bad date")
			}
		case "is":
			t.val = strings.ToLower(val)
			if t.val != "read" && t.val != "unread" {
				return nil, fmt.Errorf("bad is: value %q, want read or unread", val)
			}
		case "from", "subject", "label":
			if val == "" {
				return nil, fmt.Errorf("empty value")
			}
		default:
			return nil, fmt.Errorf("unsupported term %q", key)
		}
		terms = append(terms, t)
	}
	return terms, nil
}

func matchTerms(m *message, terms []term) bool {
	for _, t := range terms {
		var ok bool
		switch t.key {
		case "after":
			ok = m.date.UnixMilli() >= t.ms
		case "before":
			ok = m.date.UnixMilli() < t.ms
		case "is":
			ok = m.labels["UNREAD"] == (t.val == "unread")
		case "from":
			ok = strings.Contains(m.from, strings.ToLower(t.val))
		case "subject":
			ok = strings.Contains(m.subj, strings.ToLower(t.val))
		case "label":
			for l := range m.labels {
				ok = ok || strings.EqualFold(l, t.val)
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (s *Server) getMessage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	format := q.Get("format")
	if format == "" {
		format = "full"
	}
	if format != "raw" && format != "minimal" && format != "metadata" && format != "full" {
		badRequest(w, "Invalid value for format")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.live(w, r)
	if m == nil {
		return
	}
	out := m.minimal()
	switch format {
	case "raw":
		out.Snippet = m.snippet
		enc := base64.URLEncoding
		if m.unpadded {
			enc = base64.RawURLEncoding
		}
		out.Raw = enc.EncodeToString(m.raw)
		if m.badRaw {
			out.Raw = "!not base64!"
		}
	case "metadata":
		out.Snippet = m.snippet
		hs := m.headers
		if want := q["metadataHeaders"]; len(want) > 0 {
			hs = nil
			for _, h := range m.headers {
				if slices.ContainsFunc(want, func(n string) bool { return strings.EqualFold(n, h.Name) }) {
					hs = append(hs, h)
				}
			}
		}
		out.Payload = &part{MimeType: m.contentType, Headers: append([]Header{}, hs...)}
	case "full":
		// Honest but minimal: one part, the whole body as its data
		// unless multipart (then size 0 and no parts).
		out.Snippet = m.snippet
		p := &part{MimeType: m.contentType, Headers: append([]Header{}, m.headers...), Body: &partBody{}}
		if !strings.HasPrefix(m.contentType, "multipart/") {
			p.Body.Size = len(m.body)
			p.Body.Data = base64.URLEncoding.EncodeToString(m.body)
		}
		out.Payload = p
	}
	writeJSON(w, 200, out)
}

func (s *Server) trash(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.live(w, r); m != nil {
		s.changeLabels(m, []string{"TRASH"}, []string{"INBOX", "SPAM"})
		writeJSON(w, 200, m.minimal())
	}
}

func (s *Server) untrash(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.live(w, r); m != nil {
		s.changeLabels(m, []string{"INBOX"}, []string{"TRASH"})
		writeJSON(w, 200, m.minimal())
	}
}

type modifyReq struct {
	IDs            []string `json:"ids"`
	AddLabelIDs    []string `json:"addLabelIds"`
	RemoveLabelIDs []string `json:"removeLabelIds"`
}

// readModify decodes a modify/batchModify/batchDelete body and checks
// the limits; it answers 400 and returns false on error.
func (s *Server) readModify(w http.ResponseWriter, r *http.Request) (modifyReq, bool) {
	var req modifyReq
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		badRequest(w, "Invalid JSON payload received.")
		return req, false
	}
	if len(req.IDs) > 1000 {
		badRequest(w, "Number of ids cannot exceed 1000")
		return req, false
	}
	if len(req.AddLabelIDs) > 100 || len(req.RemoveLabelIDs) > 100 {
		badRequest(w, "Number of labels cannot exceed 100")
		return req, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range append(slices.Clone(req.AddLabelIDs), req.RemoveLabelIDs...) {
		if !s.labelExists(l) {
			badRequest(w, "Invalid label: "+l)
			return req, false
		}
	}
	return req, true
}

func (s *Server) modify(w http.ResponseWriter, r *http.Request) {
	req, ok := s.readModify(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.live(w, r); m != nil {
		s.changeLabels(m, req.AddLabelIDs, req.RemoveLabelIDs)
		writeJSON(w, 200, m.minimal())
	}
}

func (s *Server) batchModify(w http.ResponseWriter, r *http.Request) {
	req, ok := s.readModify(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range req.IDs {
		if m := s.msgs[id]; m != nil && !m.deleted {
			s.changeLabels(m, req.AddLabelIDs, req.RemoveLabelIDs)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) deleteAllowed(w http.ResponseWriter) bool {
	s.mu.Lock()
	ok := s.AllowDelete
	s.mu.Unlock()
	if !ok {
		writeError(w, 403, "insufficientPermissions", "")
	}
	return ok
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	if !s.deleteAllowed(w) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.live(w, r); m != nil {
		s.deleteLocked(m)
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) batchDelete(w http.ResponseWriter, r *http.Request) {
	if !s.deleteAllowed(w) {
		return
	}
	req, ok := s.readModify(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range req.IDs {
		if m := s.msgs[id]; m != nil && !m.deleted {
			s.deleteLocked(m)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

var historyTypes = []string{"messageAdded", "messageDeleted", "labelAdded", "labelRemoved"}

func (s *Server) listHistory(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("startHistoryId") == "" {
		badRequest(w, "Missing required field: startHistoryId")
		return
	}
	start, err := strconv.ParseUint(q.Get("startHistoryId"), 10, 64)
	if err != nil {
		badRequest(w, "Invalid value for startHistoryId")
		return
	}
	limit, ok := maxResults(r)
	if !ok {
		badRequest(w, "Invalid value for maxResults")
		return
	}
	types := map[string]bool{}
	for _, t := range q["historyTypes"] {
		if !slices.Contains(historyTypes, t) {
			badRequest(w, "Invalid value for historyTypes: "+t)
			return
		}
		types[t] = true
	}
	all := len(types) == 0
	label := q.Get("labelId")
	from := start
	if tok := q.Get("pageToken"); tok != "" {
		v, ok := decodeToken(tok)
		n, err := strconv.ParseUint(v, 10, 64)
		if !ok || err != nil {
			badRequest(w, "Invalid pageToken")
			return
		}
		from = max(from, n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if start <= s.floor {
		notFound(w)
		return
	}
	resp := struct {
		History       []historyJSON `json:"history,omitempty"`
		NextPageToken string        `json:"nextPageToken,omitempty"`
		HistoryID     string        `json:"historyId"`
	}{HistoryID: u64(s.historyID)}
	for _, rec := range s.history {
		if rec.id <= from {
			continue
		}
		if label != "" && !slices.Contains(rec.before, label) && !slices.Contains(rec.after, label) {
			continue
		}
		h := historyJSON{ID: u64(rec.id)}
		msg := idJSON{ID: rec.msg, ThreadID: rec.msg}
		cur := idJSON{ID: rec.msg, ThreadID: rec.msg, LabelIDs: rec.after}
		if rec.added && (all || types["messageAdded"]) {
			h.MessagesAdded = []msgWrap{{cur}}
		}
		if rec.deleted && (all || types["messageDeleted"]) {
			h.MessagesDeleted = []msgWrap{{msg}}
		}
		if len(rec.labelsAdded) > 0 && (all || types["labelAdded"]) {
			h.LabelsAdded = []labelChange{{cur, rec.labelsAdded}}
		}
		if len(rec.labelsRemoved) > 0 && (all || types["labelRemoved"]) {
			h.LabelsRemoved = []labelChange{{cur, rec.labelsRemoved}}
		}
		if h.MessagesAdded == nil && h.MessagesDeleted == nil && h.LabelsAdded == nil && h.LabelsRemoved == nil {
			continue
		}
		if len(resp.History) == limit {
			resp.NextPageToken = encodeToken(resp.History[limit-1].ID)
			break
		}
		h.Messages = []idJSON{msg}
		resp.History = append(resp.History, h)
	}
	writeJSON(w, 200, resp)
}
