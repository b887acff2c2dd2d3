// Package maildir serves a local Maildir as a POP3 maildrop.
package maildir

import (
	"context"
	"errors"

	"github.com/popbridge/popbridge/proxy"
)

// DeletePolicy says what DELE followed by QUIT does to a message.
type DeletePolicy string

const (
	// Remove unlinks the message file at QUIT.
	Remove DeletePolicy = "remove"
	// Keep leaves the file and hides the message from POP, across restarts.
	Keep DeletePolicy = "keep"
)

// Options configures a Backend.
type Options struct {
	// Path is the Maildir (the folder holding cur/ and new/). Required.
	Path string
	// OnDelete is the delete policy; empty means Remove.
	OnDelete DeletePolicy
	// StateDir holds the Keep policy's record of hidden messages. Required
	// when OnDelete is Keep.
	StateDir string
	// Account names the account in StateDir and in logs.
	Account string
}

// Backend is one account's Maildir. Login does not check credentials: the
// caller (the account router) has done that.
type Backend struct {
	opts Options
}

// New returns a Backend for opts.
func New(opts Options) (*Backend, error) {
	return nil, errors.New("maildir: not implemented")
}

// Login opens the maildrop; user and pass are ignored.
func (b *Backend) Login(ctx context.Context, user, pass string) (proxy.Mailbox, error) {
	return nil, errors.New("maildir: not implemented")
}

// Check verifies that the Maildir exists and can be read.
func (b *Backend) Check(ctx context.Context) error {
	return errors.New("maildir: not implemented")
}
