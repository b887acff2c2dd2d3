package oauth

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/cache"
)

// KeyEnv is the environment variable that may hold the token
// encryption key when no key file is configured.
const KeyEnv = "POPBRIDGE_TOKEN_KEY"

// ErrNoToken is returned by Store.Load for an account without a token.
var ErrNoToken = errors.New("oauth: no token stored")

// ErrWrongKey is returned by Store.Load when an encrypted token file
// does not open with the key given (or no key is given).
var ErrWrongKey = errors.New("oauth: the token file does not decrypt with this key")

// Store keeps one token file per account in Dir, mode 0600, replaced
// atomically. With Key set, files are sealed with NaCl secretbox
// (XSalsa20-Poly1305); a plain file is still read, and sealed on the
// next save.
type Store struct {
	Dir string
	Key *[32]byte // nil stores plain JSON
}

// fileFormat is the on-disk envelope. Exactly one of Token and Sealed
// is set; Sealed is base64(nonce || secretbox(token JSON)).
type fileFormat struct {
	Format string        `json:"format"`
	Token  *oauth2.Token `json:"token,omitempty"`
	Sealed string        `json:"sealed,omitempty"`
}

const formatV1 = "popbridge-oauth2-token/1"

// Path returns the file of account's token.
func (s *Store) Path(account string) string {
	return filepath.Join(s.Dir, url.PathEscape(account)+".json")
}

// Load returns account's stored token: ErrNoToken if there is none,
// an error wrapping ErrWrongKey if the file is sealed with another key.
func (s *Store) Load(account string) (*oauth2.Token, error) {
	path := s.Path(account)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w for account %s (%s)", ErrNoToken, account, path)
	}
	if err != nil {
		return nil, fmt.Errorf("oauth: %w", err)
	}
	var f fileFormat
	if err := json.Unmarshal(data, &f); err != nil || f.Format != formatV1 {
		return nil, fmt.Errorf("oauth: %s is not a popbridge token file", path)
	}
	if f.Sealed == "" {
		if f.Token == nil {
			return nil, fmt.Errorf("oauth: %s holds no token", path)
		}
		return f.Token, nil
	}
	if s.Key == nil {
		return nil, fmt.Errorf("%w: %s is encrypted and no key is set (token_key_file or %s)", ErrWrongKey, path, KeyEnv)
	}
	raw, err := base64.StdEncoding.DecodeString(f.Sealed)
	if err != nil || len(raw) < 24+secretbox.Overhead {
		return nil, fmt.Errorf("oauth: %s: damaged encrypted token", path)
	}
	var nonce [24]byte
	copy(nonce[:], raw[:24])
	plain, ok := secretbox.Open(nil, raw[24:], &nonce, s.Key)
	if !ok {
		return nil, fmt.Errorf("%w: %s (wrong token_key_file or %s, or a damaged file)", ErrWrongKey, path, KeyEnv)
	}
	var tok oauth2.Token
	if err := json.Unmarshal(plain, &tok); err != nil {
		return nil, fmt.Errorf("oauth: %s: %w", path, err)
	}
	return &tok, nil
}

// Save writes account's token: to a temporary file in Dir (created 0700
// if missing) that is synced, renamed over the old file, and followed
// by a sync of Dir, so a crash leaves the old or the new token, whole.
func (s *Store) Save(account string, tok *oauth2.Token) error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("oauth: %w", err)
	}
	t := *tok
	t.ExpiresIn = 0 // Expiry is what counts once stored
	f := fileFormat{Format: formatV1}
	if s.Key == nil {
		f.Token = &t
	} else {
		plain, err := json.Marshal(&t)
		if err != nil {
			return fmt.Errorf("oauth: %w", err)
		}
		var nonce [24]byte
		if _, err := rand.Read(nonce[:]); err != nil {
			return fmt.Errorf("oauth: %w", err)
		}
		f.Sealed = base64.StdEncoding.EncodeToString(secretbox.Seal(nonce[:], plain, &nonce, s.Key))
	}
	data, err := json.MarshalIndent(&f, "", "  ")
	if err != nil {
		return fmt.Errorf("oauth: %w", err)
	}
	data = append(data, '\n')
	if err := cache.WriteFile(s.Path(account), data, 0o600); err != nil {
		return fmt.Errorf("oauth: saving the token of %s: %w", account, err)
	}
	return nil
}

// ParseKey reads a 32-byte key written as 64 hex digits or as standard
// or URL-safe base64, with surrounding white space ignored.
func ParseKey(s string) (*[32]byte, error) {
	s = strings.TrimSpace(s)
	var raw []byte
	for _, dec := range []func(string) ([]byte, error){
		hex.DecodeString,
		base64.StdEncoding.DecodeString,
		func(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "=")) },
	} {
		if b, err := dec(s); err == nil && len(b) == 32 {
			raw = b
			break
		}
	}
	if len(raw) != 32 {
		return nil, errors.New("oauth: the token key must be 32 bytes as 64 hex digits or base64 (make one with: head -c 32 /dev/urandom | base64)")
	}
	var k [32]byte
	copy(k[:], raw)
	return &k, nil
}

// LoadKey returns the token key from file, or when file is empty from
// the environment variable KeyEnv; nil when neither is set.
func LoadKey(file string) (*[32]byte, error) {
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("oauth: token key: %w", err)
		}
		k, err := ParseKey(string(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		return k, nil
	}
	if v, ok := os.LookupEnv(KeyEnv); ok && v != "" {
		k, err := ParseKey(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", KeyEnv, err)
		}
		return k, nil
	}
	return nil, nil
}
