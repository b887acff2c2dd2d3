package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrUnavailable is wrapped by every error that comes from PostgreSQL
// being unreachable, restarting or overloaded: the operation changed
// nothing and may be retried later (a POP3 login answers -ERR
// [SYS/TEMP]). The pool reconnects by itself.
var ErrUnavailable = errors.New("PostgreSQL is unreachable or restarting; check that it runs and that the state DSN points to it, then try again")

// IsTemporary reports whether err wraps ErrUnavailable.
func IsTemporary(err error) bool { return errors.Is(err, ErrUnavailable) }

// wrap adds context to err, and ErrUnavailable when PostgreSQL could not
// be reached or answered with a condition that passes by itself.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if temporary(err) && !errors.Is(err, ErrUnavailable) {
		return fmt.Errorf("pgstore: %s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("pgstore: %s: %w", op, err)
}

// temporary classifies err; see wrap.
func temporary(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false // the caller gave up
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03", // admin shutdown, crash shutdown, cannot connect now
			"53300",          // too many connections
			"40001", "40P01", // serialization failure, deadlock
			"55P03", "57014": // lock timeout, statement timeout
			return true
		}
		return len(pgErr.Code) == 5 && pgErr.Code[:2] == "08" // connection exception
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connErr), errors.As(err, &netErr),
		errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err), pgconn.SafeToRetry(err),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	}
	return false
}
