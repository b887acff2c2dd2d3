// Package demomail writes the sample Maildir that popbridge demo serves:
// five messages that show what a real mailbox holds (HTML, an attachment,
// non-ASCII text, lines that start with a dot).
package demomail

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Count returns the number of messages in the Maildir mdir.
func Count(mdir string) int {
	n := 0
	for _, sub := range []string{"cur", "new"} {
		entries, _ := os.ReadDir(filepath.Join(mdir, sub))
		for _, e := range entries {
			if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
				n++
			}
		}
	}
	return n
}

// Ensure creates the sample Maildir at mdir unless a Maildir is
// already there, and reports whether it created it. The Maildir is built
// beside mdir and renamed into place, so a crash never leaves half of one.
func Ensure(mdir string, now time.Time) (created bool, err error) {
	if fi, err := os.Stat(filepath.Join(mdir, "cur")); err == nil && fi.IsDir() {
		return false, nil
	} else if _, err := os.Stat(mdir); err == nil {
		return false, fmt.Errorf("%s exists but is not a Maildir (no cur/); move it away or choose another -dir", mdir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	parent := filepath.Dir(mdir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return false, err
	}
	tmp, err := os.MkdirTemp(parent, ".Maildir-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(tmp) // a no-op after the rename
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.Mkdir(filepath.Join(tmp, sub), 0o700); err != nil {
			return false, err
		}
	}
	for i, msg := range Messages(now) {
		// A Maildir unique name: time, sequence, process, host.
		name := fmt.Sprintf("%d.M%dP%dQ%d.popbridge-demo", now.Unix()-int64(3600*(5-i)), i, os.Getpid(), i+1)
		if err := os.WriteFile(filepath.Join(tmp, "new", name), []byte(msg), 0o600); err != nil {
			return false, err
		}
	}
	if err := os.Rename(tmp, mdir); err != nil {
		return false, fmt.Errorf("creating the demo Maildir: %w", err)
	}
	return true, nil
}

// Messages returns the sample messages, LF-terminated as Maildir
// stores them, dated in the hours before now.
func Messages(now time.Time) []string {
	date := func(hoursAgo int) string {
		return now.Add(-time.Duration(hoursAgo) * time.Hour).Format(time.RFC1123Z)
	}
	id := func(n int) string {
		return fmt.Sprintf("<%d.%d.demo@popbridge.example>", now.Unix(), n)
	}
	attachment := []byte("date,messages,bytes\n2025-03-01,12,48211\n2025-03-02,9,30544\n2025-03-03,15,61730\n")
	b64 := base64.StdEncoding.EncodeToString(attachment)
	var wrapped strings.Builder
	for len(b64) > 76 {
		wrapped.WriteString(b64[:76] + "\n")
		b64 = b64[76:]
	}
	wrapped.WriteString(b64 + "\n")

	return []string{
		`Return-Path: <hello@popbridge.example>
From: popbridge <hello@popbridge.example>
To: Demo User <demo@popbridge.example>
Subject: Welcome to popbridge
Date: ` + date(5) + `
Message-ID: ` + id(1) + `
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Hello,

this message lives in a Maildir on your disk and reached you over POP3,
served by popbridge. Any POP3 client can read it: point it at the
address printed by "popbridge demo", user "demo", password "demo",
no encryption (the demo accepts logins from this machine only).

The other messages show what a real mailbox holds: an HTML newsletter,
an attachment, non-ASCII text, and lines that start with a dot.

To serve your own mail, write a configuration file (see
docs/examples/maildir.yaml) and run "popbridge serve -config FILE".

-- 
popbridge
`,
		`From: The Weekly Digest <digest@news.example.com>
To: demo@popbridge.example
Subject: Your weekly digest: 3 stories
Date: ` + date(4) + `
Message-ID: ` + id(2) + `
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="=_digest_7f3a"

This is a multi-part message in MIME format.

--=_digest_7f3a
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit

Your weekly digest

1. Why POP3 is still around
2. Maildir in five minutes
3. Dot-stuffing, explained

Read online: https://news.example.com/digest/42

--=_digest_7f3a
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: 7bit

<!DOCTYPE html>
<html>
<body style="font-family: sans-serif">
<h1>Your weekly digest</h1>
<ol>
<li><a href="https://news.example.com/pop3">Why POP3 is still around</a></li>
<li><a href="https://news.example.com/maildir">Maildir in five minutes</a></li>
<li><a href="https://news.example.com/dots">Dot-stuffing, explained</a></li>
</ol>
</body>
</html>

--=_digest_7f3a--
`,
		`From: Alice Example <alice@example.org>
To: Demo User <demo@popbridge.example>
Subject: March figures
Date: ` + date(3) + `
Message-ID: ` + id(3) + `
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="=_mixed_91c2"

--=_mixed_91c2
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Hi,

the figures for the first days of March are attached.

Alice

--=_mixed_91c2
Content-Type: text/csv; charset=us-ascii; name="march.csv"
Content-Disposition: attachment; filename="march.csv"
Content-Transfer-Encoding: base64

` + wrapped.String() + `
--=_mixed_91c2--
`,
		`From: ` + mime.QEncoding.Encode("utf-8", "Renée Müller") + ` <renee@example.org>
To: Demo User <demo@popbridge.example>
Subject: ` + mime.QEncoding.Encode("utf-8", "Grüße aus Zürich ☕") + `
Date: ` + date(2) + `
Message-ID: ` + id(4) + `
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hallo!

Grüße aus Zürich. Ce message est écrit en UTF-8, envoyé tel quel
(8 bits) : ça, c'est déjà ça. 日本語も大丈夫です。 ☕ 🏔️

Renée
`,
		`From: Bob Example <bob@example.org>
To: Demo User <demo@popbridge.example>
Subject: Where did my dotfiles go?
Date: ` + date(1) + `
Message-ID: ` + id(5) + `
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Here is what I see in my home directory:

$ ls -a
.
..
.bashrc
.profile
...and nothing else.

POP3 ends a message with a line holding a single ".", so the server
sends each line above that starts with "." with an extra "." in front,
and your client removes it again. The lines should look exactly as
written here.
`,
	}
}
