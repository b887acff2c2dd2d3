// Package pop3test holds a small POP3 client for tests. It sends what it
// is told and returns replies exactly, so that two servers (popbridge and
// Dovecot, say) can be compared byte for byte.
package pop3test
