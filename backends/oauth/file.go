package oauth

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/oauth2"
)

// FileTokenSource returns an oauth2.TokenSource that reads the access
// token from path at every call, so that an external refresher may
// rewrite the file. Surrounding white space is ignored.
func FileTokenSource(path string) oauth2.TokenSource {
	return fileTokenSource(path)
}

type fileTokenSource string

func (f fileTokenSource) Token() (*oauth2.Token, error) {
	data, err := os.ReadFile(string(f))
	if err != nil {
		return nil, fmt.Errorf("oauth: token file: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return nil, errors.New("oauth: token file " + string(f) + " is empty")
	}
	return &oauth2.Token{AccessToken: tok, TokenType: "Bearer"}, nil
}
