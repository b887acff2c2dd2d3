// Package backends holds no code: its subpackages are where popbridge's
// mail comes from, and the accounts in front of them.
//
// # Storage backends
//
// Each storage backend serves one upstream mailbox as a POP3 maildrop: it
// implements Opener (OpenMaildrop), and the maildrop it opens is a
// proxy.Mailbox:
//
//   - maildir: a local Maildir (UIDL: the file's unique name).
//   - imap: a folder of an upstream IMAP server (UIDL: UIDVALIDITY and UID).
//   - pop3: a relay to an upstream POP3 server, adding TLS and XOAUTH2
//     (UIDL: the upstream's); it passes the upstream's wire form of a
//     message through to the client.
//   - gmail: a Gmail mailbox through the Gmail REST API (UIDL: the Gmail
//     message id).
//
// A backend owns what a maildrop holds: the messages, each with a stable
// UIDL and its exact size with CRLF line ends; a stream of one message;
// and what DELE means upstream (the account's on_delete), carried out
// only from Mailbox.Delete, or proxy.Committer's Commit, at QUIT. It
// keeps what it learnt (sizes, UIDLs, sync positions) and the tombstones
// of messages it hides in a shared cache.Store, under the account's
// name; the network backends also keep recently fetched bodies in a
// cache.Bodies. Package cache says which of those may be lost. Each also has Check, which tries the
// upstream without a client (popbridge check), and the ones that learn a
// large maildrop in the background (imap, gmail) implement
// proxy.SyncReporter.
//
// A storage backend checks no password: it opens the maildrop of a Login
// the accounts have already authenticated. maildir and gmail need nothing
// from the Login; imap and pop3 log in with their configured upstream
// credentials or, with auth: passthrough, with the Login's user and
// password. No storage backend implements proxy.Backend, so one cannot be
// given to a proxy.Server without the accounts in front of it: that does
// not compile.
//
// # Accounts
//
// accounts.Router is the proxy.Backend that the server uses, and the one
// place that checks a client's password: Router.Authenticate, which any
// other listener (SMTP submission, say) is to call too. It maps a user
// name to its account, checks the password against the account's bcrypt
// hash (or, for a passthrough account without one, leaves the check to
// the upstream login), and only then opens the maildrop through the
// account's storage backend. The password reaches a storage backend only
// for a passthrough account. A wrong user and a wrong password take the
// same time and give the same proxy.ErrAuthFailed. The Mailbox it returns
// names the account as its lock key (proxy.MaildropIDer) and unwraps to
// the backend's, so the backend's optional interfaces stay visible.
//
// # Support packages
//
// oauth obtains, stores and refreshes the OAuth2 tokens of the imap, pop3
// and gmail backends. gmail/gmailtest and oauth/oauthtest are in-memory
// fakes of the Gmail API and of an OAuth2 server (cmd/fakegmail serves
// them, to try the gmail backend by hand). The test harnesses shared
// with the rest of the module are under internal/: dovecottest runs a
// private Dovecot for tests and benchmarks, pop3test is a POP3 client
// for tests, testcorpus writes a Maildir corpus of edge cases.
//
// # Modes and defaults
//
// The words that select a storage backend's behaviour (its TLS mode, the
// credentials it sends upstream, its on_delete policies) and the defaults
// of the settings a configuration file may leave out are declared once,
// in internal/modes, with a list of the words each backend accepts. A
// backend's Options take those types, its New checks them against its
// lists, and its Options.String describes it for people. Package config
// checks a file against the same lists without importing any backend.
//
// The binary (cmd/popbridge) builds one storage backend per configured
// account and puts an accounts.Router in front of them all (with
// listen.http, the server's proxy.BackendObserver times their calls); a
// configuration reload builds a new Router and swaps it in for the next
// logins.
package backends
