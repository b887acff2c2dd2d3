// Package config reads popbridge's YAML configuration file.
//
// Load decodes the file strictly (an unknown key is an error), fills in
// secrets from ${ENV_VAR} references and *_file keys, makes relative paths
// relative to the file's directory, and validates the result. Every problem
// is reported, each with its line or key path.
package config

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration file.
type Config struct {
	Listen Listen `yaml:"listen"`
	// HTTP configures the listen.http listener.
	HTTP HTTP `yaml:"http"`
	// TLS is the server certificate; nil means no TLS (no STLS, no pop3s).
	TLS *TLS `yaml:"tls"`
	// CleartextAuth says where logins without TLS are allowed. The zero
	// value allows loopback only.
	CleartextAuth CleartextAuth `yaml:"cleartext_auth"`
	// StateDir holds persistent state: the cache store, cache.db (message
	// sizes and UIDLs, messages hidden by on_delete: keep), and the
	// control socket of the running server. Load sets an absent one to
	// DefaultStateDir beside the file.
	StateDir string `yaml:"state_dir"`
	// State chooses where the per-account state lives (state.go).
	State State `yaml:"state"`
	// Cache tunes the in-memory caches.
	Cache Cache `yaml:"cache"`
	Log   Log   `yaml:"log"`
	// Limits tune the server; zero values keep the server's defaults.
	Limits   Limits    `yaml:"limits"`
	Accounts []Account `yaml:"accounts"`
	// Admin configures the web page of listen.admin; nil without one.
	Admin *Admin `yaml:"admin"`

	// failed holds the key paths Load could not resolve, so that
	// validation does not report them twice.
	failed map[string]bool
}

// Listen holds the listening addresses (host:port). Empty means off.
type Listen struct {
	// POP3 is the plain listener; it offers STLS when TLS is set.
	POP3 string `yaml:"pop3"`
	// POP3S is the implicit-TLS listener (RFC 8314); it needs TLS.
	POP3S string `yaml:"pop3s"`
	// Submission is the SMTP submission listener (RFC 6409: STARTTLS,
	// port 587) and Submissions the implicit-TLS one (RFC 8314: port
	// 465). Both need tls.
	Submission  string `yaml:"submission"`
	Submissions string `yaml:"submissions"`
	// HTTP is the operations listener: /healthz, /readyz, /metrics and
	// /status. Plain HTTP; keep it on loopback or a private network.
	HTTP string `yaml:"http"`
	// Admin is the owner's web page (see Admin); a port alone binds to
	// loopback. Off when empty.
	Admin string `yaml:"admin"`
	// ProxyProtocol lists the networks (CIDRs or addresses) of load
	// balancers whose connections to pop3, pop3s, submission and
	// submissions start with a PROXY protocol header (v1 or v2) naming
	// the client. Empty: off. Only these networks are trusted.
	ProxyProtocol []string `yaml:"proxy_protocol"`
}

// HTTP configures the operations listener of listen.http.
type HTTP struct {
	// StatusToken, if set, is the bearer token /status requires
	// ("Authorization: Bearer TOKEN"); empty leaves /status open. It may
	// be a ${ENV_VAR} reference, or StatusTokenFile may name a file
	// holding it.
	StatusToken     string `yaml:"status_token"`
	StatusTokenFile string `yaml:"status_token_file"`
}

// TLS is the server certificate: PEM files, or a self-signed certificate
// that popbridge creates once in the state directory. Either way the
// running server reads the files again when they change.
type TLS struct {
	// CertFile and KeyFile name the PEM certificate chain and its key.
	// Both are required unless SelfSigned is set, which excludes them.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// SelfSigned uses SelfSignedCert and SelfSignedKey in the state
	// directory, created at the first start (ECDSA P-256, valid 10
	// years, for the host name, localhost, 127.0.0.1 and ::1) and
	// reused afterwards.
	SelfSigned bool `yaml:"self_signed"`
	// Names are more DNS names or IP addresses for the self-signed
	// certificate (e.g. nas.lan, 192.168.1.10). Only with SelfSigned.
	Names []string `yaml:"names"`
	// MinVersion is the oldest TLS version clients may use: "1.0",
	// "1.1", "1.2" or "1.3"; empty means 1.2. Below 1.2 the CBC cipher
	// suites old clients need are enabled too. Upstream connections are
	// not affected (always 1.2 or later).
	MinVersion string `yaml:"min_version"`
}

// tlsVersions maps tls.min_version to crypto/tls versions.
var tlsVersions = map[string]uint16{
	"1.0": tls.VersionTLS10,
	"1.1": tls.VersionTLS11,
	"1.2": tls.VersionTLS12,
	"1.3": tls.VersionTLS13,
}

// MinTLSVersion returns min_version as a crypto/tls version; TLS 1.2 when
// empty (or invalid, which Validate reports).
func (t *TLS) MinTLSVersion() uint16 {
	if v, ok := tlsVersions[t.MinVersion]; ok {
		return v
	}
	return tls.VersionTLS12
}

// Load reads cert_file and key_file once and returns a server TLS config
// requiring min_version, TLS 1.2 or later by default (RFC 8314 §4.1).
// popbridge serve instead reads Config.TLSFiles, also for self_signed,
// and again when they change.
func (t *TLS) Load() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   t.MinTLSVersion(),
	}, nil
}

// DefaultBodyBytes is cache.DefaultBodyBytes as written in a file.
const DefaultBodyBytes = "64MiB"

// The self-signed certificate's files, relative to the state directory.
const (
	SelfSignedCert = "tls/cert.pem"
	SelfSignedKey  = "tls/key.pem"
)

// TLSFiles returns the certificate and key files the server uses:
// tls.cert_file and tls.key_file, or the self-signed certificate's files
// in the state directory. Both are empty without a tls section.
func (c *Config) TLSFiles() (certFile, keyFile string) {
	switch {
	case c.TLS == nil:
		return "", ""
	case c.TLS.SelfSigned:
		return filepath.Join(c.StateDir, filepath.FromSlash(SelfSignedCert)), filepath.Join(c.StateDir, filepath.FromSlash(SelfSignedKey))
	}
	return c.TLS.CertFile, c.TLS.KeyFile
}

// DefaultStateDir is the state directory, relative to the configuration
// file's directory, of a file without state_dir.
const DefaultStateDir = "popbridge-state"

// Cache tunes the in-memory caches. Every field is optional.
type Cache struct {
	// BodyBytes bounds the memory holding recently fetched message
	// bodies, shared by all accounts. Empty means 64MiB; 0 turns the body
	// cache off.
	BodyBytes ByteSize `yaml:"body_bytes"`
	// MaxMessageBytes is the largest body kept; larger messages are never
	// cached. Empty means 1MiB.
	MaxMessageBytes ByteSize `yaml:"max_message_bytes"`
}

// Log configures the log written to standard error.
type Log struct {
	// Level is trace, debug, info, warn or error. Empty means info.
	Level string `yaml:"level"`
	// Format is auto (console on a terminal, JSON otherwise), console or
	// json. Empty means auto.
	Format string `yaml:"format"`
}

// Limits are the server's resource limits. Every field is optional: zero
// keeps the proxy's default, a negative value turns the limit off.
type Limits struct {
	MaxConnections      int `yaml:"max_connections"`
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// IdleTimeout applies after login; RFC 1939 §3 asks for at least 10m.
	IdleTimeout     Duration `yaml:"idle_timeout"`
	AuthIdleTimeout Duration `yaml:"auth_idle_timeout"`
	WriteTimeout    Duration `yaml:"write_timeout"`
	BackendTimeout  Duration `yaml:"backend_timeout"`
	// AuthFailureDelay is the first delay after a failed login; it doubles
	// up to MaxAuthFailureDelay.
	AuthFailureDelay    Duration `yaml:"auth_failure_delay"`
	MaxAuthFailureDelay Duration `yaml:"max_auth_failure_delay"`
	// TrustedNetworks (CIDRs or addresses) get no auth failure delay.
	TrustedNetworks []string `yaml:"trusted_networks"`
}

// Account maps one POP3 login to a backend.
type Account struct {
	// User is the POP3 user name, matched literally.
	User string `yaml:"user"`
	// PasswordHash is a bcrypt hash (popbridge hash-password). It may be
	// a ${ENV_VAR} reference; Load replaces it with the variable's value.
	PasswordHash string `yaml:"password_hash"`
	// PasswordHashFile names a file holding the hash instead; Load reads
	// it into PasswordHash.
	PasswordHashFile string  `yaml:"password_hash_file"`
	Backend          Backend `yaml:"backend"`
	// Send is where the mail the account submits over SMTP goes; nil
	// means the default of DefaultSend.
	Send *Send `yaml:"send"`
}

// Load reads, resolves and validates the configuration file at path.
func Load(path string) (*Config, error) {
	data, dir, err := read(path)
	if err != nil {
		return nil, err
	}
	return parse(path, data, dir)
}

// LoadState reads the file at path only as far as popbridge cache needs:
// the state directory, resolved as Load does, and the account names. It
// reads no secrets and validates nothing else, so it works without the
// server's environment variables and secret files.
func LoadState(path string) (stateDir string, users []string, err error) {
	data, dir, err := read(path)
	if err != nil {
		return "", nil, err
	}
	c, doc, err := decode(path, data)
	if err != nil {
		return "", nil, err
	}
	if len(doc.probs) > 0 {
		return "", nil, joinProblems(doc.probs)
	}
	r := resolver{dir: dir, failed: map[string]bool{}}
	r.stateDir(c)
	for _, a := range c.Accounts {
		users = append(users, a.User)
	}
	return c.StateDir, users, nil
}

// read returns the file's content and its absolute directory.
func read(path string) (data []byte, dir string, err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", fmt.Errorf("config: %w", err)
	}
	data, err = os.ReadFile(path) // its error names the file
	if err != nil {
		return nil, "", err
	}
	return data, filepath.Dir(abs), nil
}

// decode decodes data (named name in errors) strictly. A syntax error is
// returned as err; problems of shape (unknown keys, values of the wrong
// kind) are in doc.probs, and c holds what could be decoded.
func decode(name string, data []byte) (c *Config, doc *document, err error) {
	// Decoding first: it also refuses an anchor that contains itself,
	// which the walk could not get out of.
	c = new(Config)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	decErr := dec.Decode(c)
	var te *yaml.TypeError
	if decErr != nil && !errors.Is(decErr, io.EOF) && !errors.As(decErr, &te) {
		return nil, nil, syntaxProblems(name, data, decErr)
	}
	if doc, err = readDocument(name, data); err != nil {
		return nil, nil, err
	}
	if te != nil {
		doc.probs = append(doc.probs, doc.decodeProblems(decErr)...)
	}
	return c, doc, nil
}

// parse decodes data (named name in errors), resolves it against dir and
// validates it. Every problem is reported, each with its line: those of
// shape first, then those of value that do not follow from them.
func parse(name string, data []byte, dir string) (*Config, error) {
	c, doc, err := decode(name, data)
	if err != nil {
		return nil, err
	}
	if doc.incomplete {
		return nil, joinProblems(doc.probs)
	}
	r := resolver{dir: dir, failed: map[string]bool{}}
	r.resolve(c)
	c.failed = r.failed
	for k := range doc.failed {
		c.failed[k] = true
	}
	probs := doc.probs
	for _, err := range append(r.errs, unjoin(c.Validate())...) {
		var p *Problem
		if !errors.As(err, &p) {
			probs = append(probs, &Problem{File: name, Msg: err.Error()})
			continue
		}
		if !doc.shadowed(p.Key) {
			probs = append(probs, doc.place(p))
		}
	}
	c.failed = nil
	if len(probs) > 0 {
		return nil, joinProblems(probs)
	}
	return c, nil
}

// unjoin returns the errors joined in err.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

func joinProblems(probs []*Problem) error {
	errs := make([]error, len(probs))
	for i, p := range probs {
		errs[i] = p
	}
	return errors.Join(errs...)
}
