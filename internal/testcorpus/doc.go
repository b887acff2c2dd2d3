// Package testcorpus writes a Maildir corpus of edge cases for tests:
// dot lines, missing final newlines, long lines, 8-bit text, empty
// messages, mixed line ends and a 5 MB message.
package testcorpus
