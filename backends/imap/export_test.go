package imap

import "github.com/emersion/go-sasl"

// NewXOAUTH2Client and NewOAuthBearerClient give the tests the SASL
// clients the backend uses.
func NewXOAUTH2Client(user, token string) sasl.Client {
	return &xoauth2Client{user: user, token: token}
}

func NewOAuthBearerClient(user, token, host string, port int) sasl.Client {
	return oauthBearerClient{sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: user, Token: token, Host: host, Port: port})}
}
