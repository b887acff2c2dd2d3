package imap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/proxy"
)

// aheadMax: only messages up to this size are fetched ahead; a FETCH
// ahead that is not used costs at most that much reading.
const aheadMax = 1 << 20

// aheadBytes and aheadCount bound one FETCH ahead of several messages:
// the octets (listed sizes) and the messages it asks for. Dropping one
// that is not used (another command, or QUIT) reads at most that much.
const (
	aheadBytes = 2 << 20
	aheadCount = 64
)

// drainLimit: a stream closed early with at most this many octets of its
// literal unread is read to the end, keeping the connection; a larger rest
// costs less as a new connection.
const drainLimit = maxTopPartial

// storeChunk bounds the UIDs of one STORE, COPY, MOVE or EXPUNGE, to keep
// command lines short.
const storeChunk = 500

// respCodeExpungeIssued: a FETCH of a message another session expunged
// (RFC 9051 §7.1).
const respCodeExpungeIssued imap.ResponseCode = "EXPUNGEISSUED"

// mailbox is one POP3 session's view of the folder.
type mailbox struct {
	b       *Backend
	s       *session
	account string
	msgs    []msg  // from List, by UID and so by UIDL
	release func() // the Store's Hold on the account
}

// mapErr wraps err for the proxy, keeping a sentinel it already has.
func (m *mailbox) mapErr(op string, err error) error {
	var pe *proxy.Error
	if errors.As(err, &pe) {
		return err
	}
	return m.b.errorf(proxy.ErrTemporary, op, err)
}

func (m *mailbox) find(uidl string) (msg, bool) {
	i, ok := slices.BinarySearchFunc(m.msgs, uidl, func(x msg, k string) int { return strings.Compare(x.key, k) })
	if !ok {
		return msg{}, false
	}
	return m.msgs[i], true
}

func (m *mailbox) lookup(uidl string) (msg, error) {
	x, ok := m.find(uidl)
	if !ok {
		return msg{}, fmt.Errorf("imap: message %s: %w", uidl, proxy.ErrNoMessage)
	}
	return x, nil
}

// Open streams the message with BODY.PEEK[] (BODY[] when MarkReadOnRetr),
// through Bodies when set. A message expunged upstream since List gives an
// error wrapping proxy.ErrNoMessage.
func (m *mailbox) Open(ctx context.Context, uidl string) (io.ReadCloser, error) {
	x, err := m.lookup(uidl)
	if err != nil {
		return nil, err
	}
	return m.openWhole(ctx, x, !m.b.opts.MarkReadOnRetr)
}

func (m *mailbox) openWhole(ctx context.Context, x msg, peek bool) (io.ReadCloser, error) {
	bodies := m.b.opts.Bodies
	if body, ok := bodies.Get(m.account, x.key); ok {
		if !peek {
			err := m.s.run(ctx, true, func(c *imapclient.Client) error {
				return storeFlags(c, []imap.UID{x.uid}, imap.FlagSeen)
			})
			if err != nil {
				return nil, m.mapErr("mark a message read at", err)
			}
		}
		return io.NopCloser(bytes.NewReader(body)), nil
	}
	rc, err := m.openSection(ctx, x.uid, &imap.FetchItemBodySection{Peek: peek})
	if err != nil {
		return nil, err
	}
	ls, ok := rc.(*literalStream)
	if ok && ls.left != x.size {
		ls.Close()
		return nil, m.standIn(x, ls.left)
	}
	if ok && peek {
		ls.onEOF = func() { m.fetchAhead(ctx, x) }
	}
	return bodies.Tee(m.account, x.key, x.size, rc), nil
}

// standIn reports a message whose body (or RFC822.SIZE) came back with
// another size than the one listed: some servers answer a FETCH of a
// message another client expunged with a stand-in (Courier-IMAP sends a
// 129-octet "message unavailable" from root@localhost). RFC822.SIZE is
// the exact size of BODY[], so the message is taken as expunged: RETR and
// TOP get -ERR, and never a body of another size than LIST said.
func (m *mailbox) standIn(x msg, got int64) error {
	m.s.log.Warn().Uint32("uid", uint32(x.uid)).Int64("listed_size", x.size).Int64("fetched_size", got).
		Msg("the server sent a message of another size than listed (a stand-in for an expunged message?): treated as removed")
	return fmt.Errorf("imap: UID %d: %d octets instead of %d: %w", x.uid, got, x.size, proxy.ErrNoMessage)
}

// fetchAhead sends the FETCH of the messages after x, without waiting
// for the reply: POP3 clients download in order, and the next RETR then
// finds its data already on the way instead of waiting a round trip to
// the server. The first FETCH ahead asks for one message; while the
// client keeps reading the messages it brought, each next one asks for
// twice as many, up to aheadCount messages and aheadBytes octets (by the
// listed sizes), so that a sequential download costs one command per
// batch instead of one per message. Only messages up to aheadMax octets,
// peeked, not already kept in Bodies.
func (m *mailbox) fetchAhead(ctx context.Context, x msg) {
	i, ok := slices.BinarySearchFunc(m.msgs, x.key, func(y msg, k string) int { return strings.Compare(y.key, k) })
	if !ok || i+1 >= len(m.msgs) || m.s.ahead != nil || m.s.dead() || ctx.Err() != nil {
		return
	}
	want := 1
	if !m.s.noBatch {
		want = min(1<<min(m.s.streak, 16), aheadCount)
	}
	var uids []imap.UID
	var bytes int64
	for _, next := range m.msgs[i+1:] {
		if len(uids) == want || next.size > aheadMax || bytes+next.size > aheadBytes && len(uids) > 0 {
			break
		}
		if _, ok := m.b.opts.Bodies.Get(m.account, next.key); ok {
			continue
		}
		uids = append(uids, next.uid)
		bytes += next.size
	}
	if len(uids) == 0 {
		return
	}
	c, end := m.s.begin(ctx)
	fc := c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	m.s.ahead = &ahead{uids: uids, fc: fc, end: end}
}

// take returns the literal of uid from the FETCH sent ahead, which asked
// for it: the replies of messages before it (the client skipped them) are
// read and dropped. A message without a reply, or with a NIL body, was
// expunged meanwhile: proxy.ErrNoMessage. The literal of the last message
// completes the command when it is read whole.
func (s *session) take(a *ahead, uid imap.UID) (*literalStream, error) {
	for {
		if a.pend == nil {
			p, err := s.nextReply(a)
			if err != nil {
				return nil, err
			}
			if p == nil { // the command ended: no reply for uid
				s.ahead = nil
				err := a.end(a.fc.Close())
				var ie *imap.Error
				if err == nil || errors.As(err, &ie) && ie.Code == respCodeExpungeIssued {
					err = proxy.ErrNoMessage
				}
				return nil, err
			}
			a.pend = p
		}
		p := a.pend
		if p.uid < uid { // skipped by the client, or not asked for
			if p.lit != nil {
				io.Copy(io.Discard, p.lit)
			}
			a.pend = nil
			continue
		}
		// Hand out uid: its reply, or none (a later one came first).
		k := 0
		for k < len(a.uids) && a.uids[k] <= uid {
			k++
		}
		a.uids = a.uids[k:]
		if p.uid > uid || p.lit == nil {
			if p.uid == uid {
				a.pend = nil
			}
			if len(a.uids) == 0 {
				s.cancelAhead()
			}
			return nil, proxy.ErrNoMessage
		}
		a.pend = nil
		r := &literalStream{s: s, fc: a.fc, lit: p.lit, left: p.lit.Size(), size: -1, end: a.end}
		if len(a.uids) == 0 {
			s.ahead = nil // r completes the command
		} else {
			r.member = a
		}
		return r, nil
	}
}

// errAheadUnmatched: a FETCH ahead was dropped because its replies could
// not be matched to the messages; the message is fetched on its own.
var errAheadUnmatched = errors.New("FETCH reply without UID before the body")

// nextReply reads the next message's reply of a FETCH sent ahead up to
// its body section; nil when the command has no more replies. A reply
// without a body section (an unsolicited FLAGS update) is skipped. A
// body section before the UID cannot be attributed in a FETCH of several
// messages: the FETCH is dropped and later ones ask for one message.
func (s *session) nextReply(a *ahead) (*aheadReply, error) {
	for {
		data := a.fc.Next()
		if data == nil {
			return nil, nil
		}
		var p aheadReply
		for item := data.Next(); item != nil; item = data.Next() {
			switch item := item.(type) {
			case imapclient.FetchItemDataUID:
				p.uid = item.UID
			case imapclient.FetchItemDataBodySection:
				if p.uid == 0 {
					if len(a.uids) != 1 {
						s.noBatch = true
						s.cancelAhead()
						return nil, errAheadUnmatched
					}
					p.uid = a.uids[0]
				}
				p.lit = item.Literal
				return &p, nil
			}
		}
	}
}

// OpenTop streams what TOP needs: a message up to TopWhole octets whole
// (kept in Bodies, read to the end at Close, so that a RETR that follows
// is free); a larger one as BODY.PEEK[HEADER] and then, only as far as the
// proxy reads, partials of BODY.PEEK[TEXT] of TopPartial octets, doubling.
// Nothing sets \Seen.
func (m *mailbox) OpenTop(ctx context.Context, uidl string, lines int) (io.ReadCloser, error) {
	x, err := m.lookup(uidl)
	if err != nil {
		return nil, err
	}
	if x.size <= m.b.opts.TopWhole {
		rc, err := m.openWhole(ctx, x, true)
		if err != nil {
			return nil, err
		}
		return drainOnClose{rc}, nil
	}
	hr, err := m.openSection(ctx, x.uid, &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, Peek: true})
	if err != nil {
		return nil, err
	}
	ls, ok := hr.(*literalStream)
	if ok && ls.size >= 0 && ls.size != x.size {
		ls.Close()
		return nil, m.standIn(x, ls.size)
	}
	var hsize int64 = -1
	if ok {
		hsize = ls.left
	}
	return &topReader{m: m, ctx: ctx, x: x, cur: hr, header: true, hsize: hsize, chunk: m.b.opts.TopPartial}, nil
}

// drainOnClose reads a small stream to its end before closing it.
type drainOnClose struct{ io.ReadCloser }

func (d drainOnClose) Close() error {
	io.Copy(io.Discard, d.ReadCloser)
	return d.ReadCloser.Close()
}

// topReader is the header literal followed by TEXT partials fetched on
// demand, until one comes back short.
type topReader struct {
	m      *mailbox
	ctx    context.Context
	x      msg
	cur    io.ReadCloser
	header bool  // cur is the header
	hsize  int64 // octets of the header, -1 if unknown
	off    int64 // TEXT offset after cur
	want   int64 // octets cur was asked for
	got    int64 // octets read from cur
	chunk  int64 // size of the next partial
	eof    bool
}

func (t *topReader) Read(p []byte) (int, error) {
	for {
		if t.eof {
			return 0, io.EOF
		}
		if t.cur == nil {
			sec := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierText, Peek: true,
				Partial: &imap.SectionPartial{Offset: t.off, Size: t.chunk}}
			rc, err := t.m.openSection(t.ctx, t.x.uid, sec)
			if err != nil {
				return 0, err
			}
			// A short partial is the end of the text: the message's
			// size is now known, and must be the listed one.
			if ls, ok := rc.(*literalStream); ok && t.hsize >= 0 && ls.left < t.chunk {
				if total := t.hsize + t.off + ls.left; total != t.x.size {
					rc.Close()
					t.eof = true
					return 0, t.m.standIn(t.x, total)
				}
			}
			t.cur, t.header, t.want, t.got = rc, false, t.chunk, 0
			t.off += t.chunk
			t.chunk = min(2*t.chunk, maxTopPartial)
		}
		n, err := t.cur.Read(p)
		t.got += int64(n)
		if err == io.EOF {
			t.cur.Close()
			t.cur = nil
			if !t.header && t.got < t.want {
				t.eof = true
			}
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (t *topReader) Close() error {
	t.eof = true
	if t.cur != nil {
		err := t.cur.Close()
		t.cur = nil
		return err
	}
	return nil
}

// openSection starts UID FETCH uid (UID BODY[...]) and returns the
// section's literal as a stream that holds the connection until it is
// read to the end or closed. A fetch that fails on a reused connection
// before any data is tried once more on a new one.
func (m *mailbox) openSection(ctx context.Context, uid imap.UID, sec *imap.FetchItemBodySection) (io.ReadCloser, error) {
	s := m.s
	if a := s.ahead; a != nil && slices.Contains(a.uids, uid) && sec.Peek && sec.Specifier == imap.PartSpecifierNone && sec.Partial == nil {
		// The FETCH went ahead: read its reply.
		r, err := s.take(a, uid)
		if err == nil {
			s.streak++
			return r, nil
		}
		if errors.Is(err, proxy.ErrNoMessage) {
			return nil, fmt.Errorf("imap: UID %d: %w", uid, err)
		}
		s.cancelAhead()
		switch {
		case errors.Is(err, errAheadUnmatched) && !s.broken:
			s.log.Debug().Msg("FETCH replies without UID first: fetching one message at a time")
		case !s.broken || ctx.Err() != nil:
			return nil, m.mapErr(fmt.Sprintf("fetch UID %d from", uid), err)
		default:
			s.log.Info().Err(err).Msg("IMAP connection failed; retrying on a new one")
		}
	}
	for attempt := 0; ; attempt++ {
		fresh, err := s.ensure(ctx)
		if err != nil {
			return nil, err
		}
		c, end := s.begin(ctx)
		r, err := startFetch(c, uid, sec)
		if err == nil {
			r.s, r.end = s, end
			return r, nil
		}
		err = end(err)
		if attempt == 0 && !fresh && s.broken && ctx.Err() == nil {
			s.log.Info().Err(err).Msg("IMAP connection failed; retrying once on a new one")
			continue
		}
		if errors.Is(err, proxy.ErrNoMessage) {
			return nil, fmt.Errorf("imap: UID %d: %w", uid, err)
		}
		return nil, m.mapErr(fmt.Sprintf("fetch UID %d from", uid), err)
	}
}

// startFetch sends the FETCH and waits for the start of the literal. The
// FETCH of a header also asks for RFC822.SIZE, to check the message is
// the one listed (see standIn).
func startFetch(c *imapclient.Client, uid imap.UID, sec *imap.FetchItemBodySection) (*literalStream, error) {
	header := sec.Specifier == imap.PartSpecifierHeader && sec.Partial == nil
	return readFetch(c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, RFC822Size: header, BodySection: []*imap.FetchItemBodySection{sec}}))
}

// readFetch waits for the start of the literal of a FETCH of one section.
func readFetch(fc *imapclient.FetchCommand) (*literalStream, error) {
	// Another client expunged the message: no FETCH reply at all, or
	// (Dovecot, before it told this session) a NIL section and OK
	// [EXPUNGEISSUED], whose code go-imap does not pass on.
	gone := func() (*literalStream, error) {
		err := fc.Close()
		var ie *imap.Error
		if err == nil || errors.As(err, &ie) && ie.Code == respCodeExpungeIssued {
			return nil, proxy.ErrNoMessage
		}
		return nil, err
	}
	data := fc.Next()
	if data == nil {
		return gone()
	}
	size := int64(-1)
	for item := data.Next(); item != nil; item = data.Next() {
		switch item := item.(type) {
		case imapclient.FetchItemDataRFC822Size:
			size = item.Size
		case imapclient.FetchItemDataBodySection:
			if item.Literal == nil {
				return gone()
			}
			return &literalStream{fc: fc, lit: item.Literal, left: item.Literal.Size(), size: size}, nil
		}
	}
	err := fc.Close()
	if err == nil {
		err = errors.New("FETCH reply without the body section")
	}
	return nil, err
}

// literalStream reads one FETCH literal; at its end it waits for the
// command's completion, so that a NO after the data fails the stream. A
// member of a FETCH of several messages sent ahead, which is not the
// last, ends with its literal; the last one completes the command.
type literalStream struct {
	s    *session
	fc   *imapclient.FetchCommand
	lit  io.Reader
	left int64 // octets of the literal not yet read
	size int64 // the message's RFC822.SIZE if it came before the literal, else -1
	end  func(error) error
	done bool
	err  error
	// member, if set, is the FETCH ahead this literal is part of, whose
	// command goes on after it.
	member *ahead
	// onEOF, if set, runs once the literal was read whole and the
	// command completed.
	onEOF func()
}

func (r *literalStream) Read(p []byte) (int, error) {
	if r.done {
		if r.err != nil {
			return 0, r.err
		}
		return 0, io.EOF
	}
	n, err := r.lit.Read(p)
	r.left -= int64(n)
	switch {
	case err == io.EOF:
		if r.member != nil {
			r.done = true
			return n, io.EOF
		}
		if err := r.finish(); err != nil {
			return n, err
		}
		if r.onEOF != nil {
			r.onEOF()
		}
		return n, io.EOF
	case err != nil:
		r.finish()
		return n, err
	}
	return n, nil
}

// finish completes the command; for a member of a FETCH ahead, it drops
// the rest of that FETCH.
func (r *literalStream) finish() error {
	if !r.done {
		r.done = true
		if r.member != nil {
			if r.s.ahead == r.member {
				r.s.cancelAhead()
			}
			r.err = errors.New("FETCH ahead dropped")
			return r.err
		}
		r.err = r.end(r.fc.Close())
	}
	return r.err
}

// Close ends the command: it reads the rest of a small literal, or drops
// the connection (the next command dials again) to skip a large one. A
// member of a FETCH ahead closed early reads the rest of its literal
// only, and the FETCH goes on.
func (r *literalStream) Close() error {
	if r.done {
		return nil
	}
	if r.left > drainLimit {
		r.s.dc.abort()
	} else if r.member != nil {
		if _, err := io.Copy(io.Discard, r.lit); err == nil {
			r.done = true
			return nil
		}
	}
	r.finish()
	return nil
}

// Delete applies the delete policy to the messages (see Options.OnDelete).
func (m *mailbox) Delete(ctx context.Context, uidls []string) error {
	var uids []imap.UID
	var keys []string
	for _, u := range uidls {
		if x, ok := m.find(u); ok {
			uids = append(uids, x.uid)
			keys = append(keys, x.key)
		}
	}
	if len(uids) == 0 {
		return nil
	}
	slices.Sort(uids)
	policy := m.b.opts.OnDelete
	log := m.s.log.With().Str("on_delete", string(policy)).Int("messages", len(uids)).Logger()
	// Each policy may run twice if a reused connection turns out dead:
	// STORE, EXPUNGE and MOVE of the same UIDs are idempotent (a retried
	// COPY could copy twice only if the first one's reply was lost).
	var hide bool // the messages stay upstream: hide them from POP
	var err error
	switch policy {
	case modes.Keep:
		hide = true
	case modes.Seen:
		hide = true
		err = m.s.run(ctx, true, func(c *imapclient.Client) error {
			return storeFlags(c, uids, imap.FlagSeen)
		})
	case modes.Expunge:
		err = m.s.run(ctx, true, func(c *imapclient.Client) (err error) {
			hide, err = m.expunge(c, uids)
			return err
		})
	default:
		folder, _ := policy.MoveTarget()
		err = m.s.run(ctx, true, func(c *imapclient.Client) (err error) {
			hide, err = m.move(c, uids, folder)
			return err
		})
	}
	if err != nil {
		return m.mapErr("apply on_delete "+string(policy)+" at", err)
	}
	for _, k := range keys {
		m.b.opts.Bodies.Remove(m.account, k)
	}
	store := m.b.opts.Store
	switch {
	case store == nil && hide:
		log.Warn().Msg("no cache store for tombstones: the messages will be listed again")
	case store == nil:
	case hide:
		if err := store.Apply(m.account, cache.Change{AddTombstones: keys}); err != nil {
			return m.mapErr("hide messages of", err)
		}
	default:
		// Gone upstream; forgetting them now keeps the next login warm.
		if err := store.Apply(m.account, cache.Change{Delete: keys}); err != nil {
			log.Error().Err(err).Msg("updating the cache failed")
		}
	}
	log.Info().Bool("hidden", hide).Msg("deleted messages")
	return nil
}

// expunge sets \Deleted and removes the messages with UID EXPUNGE. Without
// UIDPLUS, it sends EXPUNGE only if no other message is marked \Deleted,
// and otherwise reports that the messages stay (hide).
func (m *mailbox) expunge(c *imapclient.Client, uids []imap.UID) (hide bool, err error) {
	if err := storeFlags(c, uids, imap.FlagDeleted); err != nil {
		return false, err
	}
	if m.s.caps.Has(imap.CapUIDPlus) {
		for set := range chunks(uids) {
			if err := c.UIDExpunge(set).Close(); err != nil {
				return false, fmt.Errorf("UID EXPUNGE: %w", err)
			}
		}
		return false, nil
	}
	data, err := c.UIDSearch(&imap.SearchCriteria{Flag: []imap.Flag{imap.FlagDeleted}}, nil).Wait()
	if err != nil {
		return false, fmt.Errorf("UID SEARCH DELETED: %w", err)
	}
	foreign := 0
	for _, uid := range data.AllUIDs() {
		if _, ok := slices.BinarySearch(uids, uid); !ok {
			foreign++
		}
	}
	if foreign > 0 {
		m.s.log.Warn().Int("messages", len(uids)).Int("others_deleted", foreign).
			Msg("server lacks UIDPLUS and other messages are marked \\Deleted: not expunging; " +
				"the messages stay marked \\Deleted upstream and are hidden from POP")
		return true, nil
	}
	if err := c.Expunge().Close(); err != nil {
		return false, fmt.Errorf("EXPUNGE: %w", err)
	}
	return false, nil
}

// move moves the messages to folder with MOVE, or COPY and expunge.
func (m *mailbox) move(c *imapclient.Client, uids []imap.UID, folder string) (hide bool, err error) {
	hasMove := m.s.caps.Has(imap.CapMove)
	for set := range chunks(uids) {
		op := func() error {
			if hasMove {
				_, err := c.Move(set, folder).Wait()
				return err
			}
			_, err := c.Copy(set, folder).Wait()
			return err
		}
		err := op()
		var ie *imap.Error
		if errors.As(err, &ie) && ie.Code == imap.ResponseCodeTryCreate {
			m.s.log.Info().Str("folder", folder).Msg("creating the on_delete folder")
			if cerr := c.Create(folder, nil).Wait(); cerr != nil {
				return false, fmt.Errorf("CREATE %q: %w", folder, cerr)
			}
			err = op()
		}
		if err != nil {
			return false, fmt.Errorf("UID MOVE/COPY to %q: %w", folder, err)
		}
	}
	if hasMove {
		return false, nil
	}
	return m.expunge(c, uids)
}

// storeFlags adds flag to the messages: UID STORE +FLAGS.SILENT.
func storeFlags(c *imapclient.Client, uids []imap.UID, flag imap.Flag) error {
	for set := range chunks(uids) {
		err := c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{flag}}, nil).Close()
		if err != nil {
			return fmt.Errorf("UID STORE +FLAGS.SILENT (%s): %w", flag, err)
		}
	}
	return nil
}

// chunks yields sets of at most storeChunk UIDs.
func chunks(uids []imap.UID) func(func(imap.UIDSet) bool) {
	return func(yield func(imap.UIDSet) bool) {
		for part := range slices.Chunk(uids, storeChunk) {
			if !yield(imap.UIDSetNum(part...)) {
				return
			}
		}
	}
}

// Close releases the account and logs out in the background, so that
// the client's QUIT is not answered a round trip to the server later.
func (m *mailbox) Close() error {
	m.release()
	go func() {
		if err := m.s.logout(); err != nil {
			m.s.log.Debug().Err(err).Msg("LOGOUT failed")
		}
	}()
	return nil
}
