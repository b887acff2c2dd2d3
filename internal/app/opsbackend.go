package app

import (
	"context"
	"io"
	"time"

	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/proxy"
)

// wrap returns account a's backend b with its calls timed and their
// outcome recorded for /status; b itself when m is nil.
func (m *metrics) wrap(a config.Account, b proxy.Backend) proxy.Backend {
	if m == nil {
		return b
	}
	return &recBackend{b: b, s: m.account(a)}
}

// recBackend is a proxy.Backend that records its calls and those of the
// Mailboxes it returns.
type recBackend struct {
	b proxy.Backend
	s *accountStatus
}

func (r *recBackend) Login(ctx context.Context, user, pass string) (proxy.Mailbox, error) {
	start := time.Now()
	mb, err := r.b.Login(ctx, user, pass)
	r.s.observe(opLogin, start, err)
	if err != nil {
		return nil, err
	}
	m := &recMailbox{mb: mb, s: r.s}
	_, top := mb.(proxy.TopOpener)
	_, commit := mb.(proxy.Committer)
	switch {
	case top && commit:
		return recTopCommit{m}, nil
	case top:
		return recTop{m}, nil
	case commit:
		return recCommit{m}, nil
	}
	return m, nil
}

// recMailbox is a recording proxy.Mailbox. It implements TopOpener and
// Committer itself (by the types below, only when the wrapped Mailbox
// does), to time those calls too; the proxy finds any other optional
// interface (MaildropIDer) through Unwrap.
type recMailbox struct {
	mb proxy.Mailbox
	s  *accountStatus
}

var (
	_ proxy.Unwrapper = (*recMailbox)(nil)
	_ proxy.TopOpener = recTop{}
	_ proxy.Committer = recCommit{}
	_ proxy.TopOpener = recTopCommit{}
	_ proxy.Committer = recTopCommit{}
)

func (m *recMailbox) List(ctx context.Context) ([]proxy.MessageInfo, error) {
	start := time.Now()
	list, err := m.mb.List(ctx)
	m.s.observe(opList, start, err)
	return list, err
}

func (m *recMailbox) Open(ctx context.Context, uid string) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := m.mb.Open(ctx, uid)
	m.s.observe(opOpen, start, err)
	return rc, err
}

func (m *recMailbox) Delete(ctx context.Context, uids []string) error {
	start := time.Now()
	err := m.mb.Delete(ctx, uids)
	m.s.observe(opDelete, start, err)
	return err
}

func (m *recMailbox) Close() error { return m.mb.Close() }

// Unwrap returns the wrapped Mailbox.
func (m *recMailbox) Unwrap() proxy.Mailbox { return m.mb }

func (m *recMailbox) openTop(ctx context.Context, uid string, lines int) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := m.mb.(proxy.TopOpener).OpenTop(ctx, uid, lines)
	m.s.observe(opTop, start, err)
	return rc, err
}

func (m *recMailbox) commit(ctx context.Context, deleted, retrieved []string) error {
	start := time.Now()
	err := m.mb.(proxy.Committer).Commit(ctx, deleted, retrieved)
	m.s.observe(opCommit, start, err)
	return err
}

type recTop struct{ *recMailbox }

func (m recTop) OpenTop(ctx context.Context, uid string, lines int) (io.ReadCloser, error) {
	return m.openTop(ctx, uid, lines)
}

type recCommit struct{ *recMailbox }

func (m recCommit) Commit(ctx context.Context, deleted, retrieved []string) error {
	return m.commit(ctx, deleted, retrieved)
}

type recTopCommit struct{ *recMailbox }

func (m recTopCommit) OpenTop(ctx context.Context, uid string, lines int) (io.ReadCloser, error) {
	return m.openTop(ctx, uid, lines)
}

func (m recTopCommit) Commit(ctx context.Context, deleted, retrieved []string) error {
	return m.commit(ctx, deleted, retrieved)
}

// accountUsers returns the user names of cfg's accounts, in order.
func accountUsers(cfg *config.Config) []string {
	users := make([]string, len(cfg.Accounts))
	for i, a := range cfg.Accounts {
		users[i] = a.User
	}
	return users
}
