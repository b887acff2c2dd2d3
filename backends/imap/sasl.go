package imap

import "github.com/emersion/go-sasl"

// xoauth2Client is the XOAUTH2 SASL mechanism of Google and Microsoft
// (developers.google.com/gmail/imap/xoauth2-protocol), which go-sasl does
// not carry.
type xoauth2Client struct{ user, token string }

func (x *xoauth2Client) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + x.user + "\x01auth=Bearer " + x.token + "\x01\x01"), nil
}

// Next answers the server's error challenge (a base64 JSON status) with an
// empty response, after which the server ends the command with NO. Failing
// here instead would leave go-imap's Authenticate returning while the
// server still waits for a response line, and the next command would be
// taken as that line.
func (x *xoauth2Client) Next(challenge []byte) ([]byte, error) {
	return []byte{}, nil
}

// oauthBearerClient is go-sasl's OAUTHBEARER client (RFC 7628) answering
// the error challenge with the %x01 dummy response of RFC 7628 §3.2.3
// instead of failing, for the reason given at xoauth2Client.Next.
type oauthBearerClient struct{ sasl.Client }

func (o oauthBearerClient) Next(challenge []byte) ([]byte, error) {
	return []byte{0x01}, nil
}
