package app

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/cache/pgstore"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/proxy"
)

// pgTokens is the token store of every replica under state.driver
// postgres, in place of the files of state_dir/tokens: pgstore.Tokens,
// with its errors translated to those oauth.Source knows.
type pgTokens struct{ t *pgstore.Tokens }

var _ oauth.Refresher = pgTokens{}

func (p pgTokens) Load(account string) (*oauth2.Token, error) {
	tok, err := p.t.Load(account)
	return tok, tokenError(err)
}

func (p pgTokens) Save(account string, tok *oauth2.Token) error {
	return tokenError(p.t.Save(account, tok))
}

func (p pgTokens) Refresh(ctx context.Context, account string, stale func(*oauth2.Token) bool,
	refresh func(context.Context, *oauth2.Token) (*oauth2.Token, error)) (*oauth2.Token, error) {
	tok, err := p.t.Refresh(ctx, account, stale, refresh)
	return tok, tokenError(err)
}

// tokenError adds oauth's sentinels to pgstore's token errors.
func tokenError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pgstore.ErrNoToken):
		return fmt.Errorf("%w: %w", oauth.ErrNoToken, err)
	case errors.Is(err, pgstore.ErrWrongKey):
		return fmt.Errorf("%w: %w", oauth.ErrWrongKey, err)
	case pgstore.IsTemporary(err):
		return fmt.Errorf("%w: %w", proxy.ErrTemporary, err)
	}
	return err
}

// tokenStore returns the store of the OAuth2 tokens: the files of
// state_dir/tokens, or PostgreSQL under state.driver postgres, sealed
// with key either way.
func (st *state) tokenStore(files *oauth.Store) oauth.TokenStore {
	if st.tokenDB != nil {
		return pgTokens{&pgstore.Tokens{Store: st.tokenDB, Key: files.Key}}
	}
	return files
}

// SaveSharedToken stores tok for account in the PostgreSQL state of cfg
// (state.driver postgres), sealed with key, for popbridge auth; the
// replicas use it at their next login.
func SaveSharedToken(cfg *config.Config, account string, key *[32]byte, tok *oauth2.Token) error {
	pg, err := OpenShared(context.Background(), cfg.State, nil)
	if err != nil {
		return err
	}
	defer pg.Close()
	return (&pgstore.Tokens{Store: pg, Key: key}).Save(account, tok)
}
