package imap

import (
	"context"
	"fmt"
	"io"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// Append stores the message of size octets read from r in folder with
// flags, over a connection of its own logged in with the backend's
// credentials (the copy in Sent of a message sent through popbridge).
func (b *Backend) Append(ctx context.Context, folder string, r io.Reader, size int64, flags []imap.Flag) error {
	// checkOnly: the backend's folder is only examined, never changed.
	s := &session{b: b, user: b.opts.Username, pass: b.opts.Password, log: b.log, checkOnly: true}
	if err := s.connect(ctx); err != nil {
		return err
	}
	defer s.logout()
	err := s.run(ctx, false, func(c *imapclient.Client) error {
		cmd := c.Append(folder, size, &imap.AppendOptions{Flags: flags})
		if _, err := io.Copy(cmd, r); err != nil {
			cmd.Close()
			return err
		}
		if err := cmd.Close(); err != nil {
			return err
		}
		_, err := cmd.Wait()
		return err
	})
	if err != nil {
		return fmt.Errorf("imap: append to %q at %s: %w", folder, b.opts.Addr, err)
	}
	return nil
}
