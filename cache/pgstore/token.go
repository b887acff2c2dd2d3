package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/oauth2"
)

// ErrNoToken is wrapped by Tokens.Load for an account without a token.
var ErrNoToken = errors.New("pgstore: no OAuth2 token stored")

// ErrWrongKey is wrapped by Tokens.Load when a sealed token does not
// open with the key given (or no key is given).
var ErrWrongKey = errors.New("pgstore: the stored OAuth2 token does not decrypt with this key")

// DefaultRefreshTimeout bounds a token endpoint call made by Refresh,
// during which a transaction and a pool connection stay open.
const DefaultRefreshTimeout = 20 * time.Second

// Tokens keeps the OAuth2 tokens of every replica, one row per account,
// in the envelope backends/oauth writes to its files
// ({"format": "popbridge-oauth2-token/1", ...}), sealed with NaCl
// secretbox when Key is set, so a token file's bytes and a row's are
// interchangeable. Every row has a version for compare-and-set.
type Tokens struct {
	Store *Store
	Key   *[32]byte // nil stores plain JSON, as oauth.Store does
	// RefreshTimeout bounds the refresh function of Refresh; zero means
	// DefaultRefreshTimeout.
	RefreshTimeout time.Duration
}

type tokenEnvelope struct {
	Format string        `json:"format"`
	Token  *oauth2.Token `json:"token,omitempty"`
	Sealed string        `json:"sealed,omitempty"`
}

const tokenFormat = "popbridge-oauth2-token/1"

func (t *Tokens) seal(tok *oauth2.Token) ([]byte, error) {
	if tok == nil {
		return nil, invalid("pgstore: no token to store")
	}
	c := *tok
	c.ExpiresIn = 0
	env := tokenEnvelope{Format: tokenFormat}
	if t.Key == nil {
		env.Token = &c
	} else {
		plain, err := json.Marshal(&c)
		if err != nil {
			return nil, err
		}
		var nonce [24]byte
		if _, err := rand.Read(nonce[:]); err != nil {
			return nil, err
		}
		env.Sealed = base64.StdEncoding.EncodeToString(secretbox.Seal(nonce[:], plain, &nonce, t.Key))
	}
	return json.Marshal(&env)
}

func (t *Tokens) open(account string, data []byte) (*oauth2.Token, error) {
	var env tokenEnvelope
	if err := json.Unmarshal(data, &env); err != nil || env.Format != tokenFormat {
		return nil, fmt.Errorf("pgstore: the stored token of %s is not a popbridge token", account)
	}
	if env.Sealed == "" {
		if env.Token == nil {
			return nil, fmt.Errorf("pgstore: the stored token of %s is empty", account)
		}
		return env.Token, nil
	}
	if t.Key == nil {
		return nil, fmt.Errorf("%w: the token of %s is encrypted and no key is set (token_key_file or POPBRIDGE_TOKEN_KEY)", ErrWrongKey, account)
	}
	raw, err := base64.StdEncoding.DecodeString(env.Sealed)
	if err != nil || len(raw) < 24+secretbox.Overhead {
		return nil, fmt.Errorf("pgstore: the stored token of %s is damaged", account)
	}
	var nonce [24]byte
	copy(nonce[:], raw[:24])
	plain, ok := secretbox.Open(nil, raw[24:], &nonce, t.Key)
	if !ok {
		return nil, fmt.Errorf("%w: the token of %s (every replica needs the same token key)", ErrWrongKey, account)
	}
	var tok oauth2.Token
	if err := json.Unmarshal(plain, &tok); err != nil {
		return nil, fmt.Errorf("pgstore: the stored token of %s: %w", account, err)
	}
	return &tok, nil
}

func expiry(tok *oauth2.Token) *time.Time {
	if tok.Expiry.IsZero() {
		return nil
	}
	return &tok.Expiry
}

// Load returns account's token, as oauth.Store.Load does; an error
// wrapping ErrNoToken if there is none.
func (t *Tokens) Load(account string) (*oauth2.Token, error) {
	tok, _, err := t.LoadVersion(context.Background(), account)
	return tok, err
}

// LoadVersion returns account's token and its version, for
// CompareAndSwap.
func (t *Tokens) LoadVersion(ctx context.Context, account string) (*oauth2.Token, int64, error) {
	if err := checkAccount(account); err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, t.Store.timeout)
	defer cancel()
	var data []byte
	var version int64
	err := t.Store.pool.QueryRow(ctx, "SELECT token, version FROM oauth_token WHERE account = $1", account).Scan(&data, &version)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, fmt.Errorf("%w for account %s", ErrNoToken, account)
	}
	if err != nil {
		return nil, 0, wrap(fmt.Sprintf("account %q: read the token", account), err)
	}
	tok, err := t.open(account, data)
	return tok, version, err
}

// Save stores account's token whatever is stored, as oauth.Store.Save
// does (after an interactive login). A token without a refresh token
// keeps the stored one: providers may leave it out of a refresh answer.
func (t *Tokens) Save(account string, tok *oauth2.Token) error {
	if err := checkAccount(account); err != nil {
		return err
	}
	if tok == nil {
		return invalid("pgstore: no token to store")
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.Store.timeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, t.Store.pool, func(tx pgx.Tx) error {
		old, _, err := t.lockedRead(ctx, tx, account)
		if err != nil && !errors.Is(err, ErrNoToken) {
			return err
		}
		return t.write(ctx, tx, account, keepRefresh(tok, old))
	})
	if err != nil {
		return wrap(fmt.Sprintf("account %q: save the token", account), err)
	}
	return nil
}

// CompareAndSwap stores tok only if the stored version is still version
// (0: no token stored yet), and reports whether it did. A caller that
// lost re-reads the token another replica stored and uses that one.
func (t *Tokens) CompareAndSwap(ctx context.Context, account string, version int64, tok *oauth2.Token) (bool, error) {
	if err := checkAccount(account); err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, t.Store.timeout)
	defer cancel()
	data, err := t.seal(tok)
	if err != nil {
		return false, fmt.Errorf("pgstore: seal the token: %w", err)
	}
	var ok bool
	err = pgx.BeginFunc(ctx, t.Store.pool, func(tx pgx.Tx) error {
		var tag interface{ RowsAffected() int64 }
		var err error
		if version == 0 {
			tag, err = tx.Exec(ctx, `INSERT INTO oauth_token (account, version, token, expires_at) VALUES ($1, 1, $2, $3)
				ON CONFLICT DO NOTHING`, account, data, expiry(tok))
		} else {
			tag, err = tx.Exec(ctx, `UPDATE oauth_token SET token = $3, expires_at = $4, version = version + 1, updated_at = now()
				WHERE account = $1 AND version = $2`, account, version, data, expiry(tok))
		}
		if err != nil {
			return err
		}
		if ok = tag.RowsAffected() == 1; ok {
			return notify(ctx, tx, t.Store.origin, "token", account)
		}
		return nil
	})
	if err != nil {
		return false, wrap(fmt.Sprintf("account %q: save the token", account), err)
	}
	return ok, nil
}

// Refresh returns account's token, refreshed once across all replicas
// when stale says so: the row is locked (SELECT ... FOR UPDATE) while
// stale is asked and refresh runs, so concurrent callers on any replica
// wait and then see the new token instead of refreshing again. The new
// token is written with compare-and-set in the same transaction; one
// without a refresh token keeps the stored one, so a rotated refresh
// token is never lost. When refresh fails, nothing changes.
func (t *Tokens) Refresh(ctx context.Context, account string, stale func(*oauth2.Token) bool,
	refresh func(context.Context, *oauth2.Token) (*oauth2.Token, error)) (*oauth2.Token, error) {
	if err := checkAccount(account); err != nil {
		return nil, err
	}
	rt := t.RefreshTimeout
	if rt <= 0 {
		rt = DefaultRefreshTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, t.Store.timeout+rt)
	defer cancel()
	var out *oauth2.Token
	var refreshErr error
	err := pgx.BeginFunc(ctx, t.Store.pool, func(tx pgx.Tx) error {
		cur, version, err := t.lockedRead(ctx, tx, account)
		if err != nil {
			return err
		}
		if !stale(cur) {
			out = cur
			return nil
		}
		rctx, rcancel := context.WithTimeout(ctx, rt)
		fresh, err := refresh(rctx, cur)
		rcancel()
		if err != nil {
			refreshErr = err
			return err
		}
		if fresh == nil {
			refreshErr = errors.New("the refresh gave no token")
			return refreshErr
		}
		fresh = keepRefresh(fresh, cur)
		data, err := t.seal(fresh)
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE oauth_token SET token = $3, expires_at = $4, version = version + 1, updated_at = now()
			WHERE account = $1 AND version = $2`, account, version, data, expiry(fresh))
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("pgstore: the token of %s changed under its row lock", account)
		}
		out = fresh
		return notify(ctx, tx, t.Store.origin, "token", account)
	})
	if refreshErr != nil {
		return nil, fmt.Errorf("pgstore: account %q: refresh the token: %w", account, refreshErr)
	}
	if err != nil {
		if errors.Is(err, ErrNoToken) || errors.Is(err, ErrWrongKey) {
			return nil, err
		}
		return nil, wrap(fmt.Sprintf("account %q: refresh the token", account), err)
	}
	return out, nil
}

// lockedRead reads and row-locks account's token in tx.
func (t *Tokens) lockedRead(ctx context.Context, tx pgx.Tx, account string) (*oauth2.Token, int64, error) {
	var data []byte
	var version int64
	err := tx.QueryRow(ctx, "SELECT token, version FROM oauth_token WHERE account = $1 FOR UPDATE", account).Scan(&data, &version)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, fmt.Errorf("%w for account %s", ErrNoToken, account)
	}
	if err != nil {
		return nil, 0, err
	}
	tok, err := t.open(account, data)
	return tok, version, err
}

// write upserts tok in tx, bumping the version.
func (t *Tokens) write(ctx context.Context, tx pgx.Tx, account string, tok *oauth2.Token) error {
	data, err := t.seal(tok)
	if err != nil {
		return fmt.Errorf("seal the token: %w", err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO oauth_token (account, version, token, expires_at) VALUES ($1, 1, $2, $3)
		ON CONFLICT (account) DO UPDATE SET token = EXCLUDED.token, expires_at = EXCLUDED.expires_at,
			version = oauth_token.version + 1, updated_at = now()`, account, data, expiry(tok))
	if err != nil {
		return err
	}
	return notify(ctx, tx, t.Store.origin, "token", account)
}

// keepRefresh returns tok, with old's refresh token when tok has none.
func keepRefresh(tok, old *oauth2.Token) *oauth2.Token {
	if tok.RefreshToken != "" || old == nil || old.RefreshToken == "" {
		return tok
	}
	c := *tok
	c.RefreshToken = old.RefreshToken
	return &c
}

// TokenSource returns an oauth2.TokenSource for account that refreshes
// through conf once across all replicas (see Refresh) when the stored
// token is no longer valid, and keeps every rotated refresh token.
func (t *Tokens) TokenSource(ctx context.Context, account string, conf *oauth2.Config) oauth2.TokenSource {
	return &tokenSource{t: t, ctx: ctx, account: account, conf: conf}
}

type tokenSource struct {
	t       *Tokens
	ctx     context.Context
	account string
	conf    *oauth2.Config
}

func (s *tokenSource) Token() (*oauth2.Token, error) {
	return s.t.Refresh(s.ctx, s.account, func(tok *oauth2.Token) bool { return !tok.Valid() },
		func(ctx context.Context, old *oauth2.Token) (*oauth2.Token, error) {
			expired := *old
			expired.AccessToken = "" // makes the source refresh
			return s.conf.TokenSource(ctx, &expired).Token()
		})
}
