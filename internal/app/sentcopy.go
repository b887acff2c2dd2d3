package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/backends"
	imapb "github.com/popbridge/popbridge/backends/imap"
	"github.com/popbridge/popbridge/config"
)

// sentCopyTimeout bounds the APPEND of a copy in Sent.
const sentCopyTimeout = 2 * time.Minute

// withSentCopy wraps snd so that each message the upstream accepted is
// appended to folder of account a's imap backend (send.sent_folder).
func withSentCopy(a config.Account, folder string, snd backends.Sender, st *state) (backends.Sender, error) {
	c := a.Backend.IMAP
	if c == nil {
		return nil, fmt.Errorf("only for imap backends")
	}
	dial, err := c.DialTimeout.Value()
	if err != nil {
		return nil, fmt.Errorf("dial_timeout: %w", err)
	}
	command, err := c.CommandTimeout.Value()
	if err != nil {
		return nil, fmt.Errorf("command_timeout: %w", err)
	}
	// A backend of its own (never synced or served): it only appends.
	opts := imapb.Options{Addr: c.Addr, TLS: c.TLS, Auth: c.Auth, Username: c.Username, Password: c.Password,
		Folder: c.Folder, OnDelete: c.OnDelete, Account: a.User, DialTimeout: dial, CommandTimeout: command, Logger: st.log}
	if opts.TokenSource, opts.TLSConfig, err = upstream(a, c.Upstream, st); err != nil {
		return nil, err
	}
	if opts.Store == nil {
		opts.Store = st.store
	}
	b, err := imapb.New(opts)
	if err != nil {
		return nil, err
	}
	spool := filepath.Join(st.dir, SpoolDir)
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	log := zerolog.Nop()
	if st.log != nil {
		log = *st.log
	}
	return &sentCopy{Sender: snd, folder: folder, imap: b, spool: spool, log: log.With().Str("account", a.User).Logger(), m: st.metrics, account: a.User}, nil
}

// sentCopy is a sender that appends each message sent to an IMAP folder.
type sentCopy struct {
	backends.Sender
	folder  string
	imap    *imapb.Backend
	spool   string
	log     zerolog.Logger
	m       *metrics
	account string
}

func (s *sentCopy) Begin(ctx context.Context, from string, opts backends.MailOptions) (backends.Transaction, error) {
	tx, err := s.Sender.Begin(ctx, from, opts)
	if err != nil {
		return nil, err
	}
	return &sentCopyTx{Transaction: tx, s: s}, nil
}

type sentCopyTx struct {
	backends.Transaction
	s *sentCopy
}

// Data relays the message while spooling it to a 0600 file, then, once
// the upstream accepted it, appends the file to the folder. A failed
// copy is logged and counted; the message was sent all the same.
func (t *sentCopyTx) Data(ctx context.Context, r io.Reader) (string, error) {
	f, err := os.CreateTemp(t.s.spool, "sent-*.eml") // 0600
	if err != nil {
		t.s.failed(fmt.Errorf("spool the copy: %w", err))
		return t.Transaction.Data(ctx, r)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	w := &spoolWriter{f: f}
	reply, err := t.Transaction.Data(ctx, io.TeeReader(r, w))
	if err != nil {
		return reply, err
	}
	if w.err != nil {
		t.s.failed(fmt.Errorf("spool the copy: %w", w.err))
		return reply, nil
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sentCopyTimeout)
	defer cancel()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.s.failed(fmt.Errorf("spool the copy: %w", err))
	} else if err := t.s.imap.Append(actx, t.s.folder, f, w.n, []imap.Flag{imap.FlagSeen}); err != nil {
		t.s.failed(err)
	} else {
		t.s.count("ok")
		t.s.log.Debug().Str("folder", t.s.folder).Int64("bytes", w.n).Msg("submission: copy stored in the sent folder")
	}
	return reply, nil
}

func (s *sentCopy) failed(err error) {
	s.count("failed")
	s.log.Error().Err(err).Str("folder", s.folder).Msg("submission: the message was sent, but its copy could not be stored in the sent folder; check send.sent_folder and the IMAP server")
}

func (s *sentCopy) count(result string) {
	if s.m != nil {
		s.m.sentCopiesVec().WithLabelValues(s.account, result).Inc()
	}
}

// spoolWriter writes to f until the first error, which it keeps rather
// than return (a failed copy must not fail the send).
type spoolWriter struct {
	f   *os.File
	n   int64
	err error
}

func (w *spoolWriter) Write(p []byte) (int, error) {
	if w.err == nil {
		n, err := w.f.Write(p)
		w.n += int64(n)
		w.err = err
	}
	return len(p), nil
}

// sentCopiesVec returns popbridge_smtp_sent_copies_total, made on first
// use.
func (m *metrics) sentCopiesVec() *prometheus.CounterVec {
	m.sentCopyOnce.Do(func() {
		m.sentCopies = factory{m.reg}.counterVec("popbridge_smtp_sent_copies_total",
			"Copies of sent messages appended to send.sent_folder, by account and result (ok, failed).", "account", "result")
	})
	return m.sentCopies
}
