package config

import (
	"net/url"
	"strings"
	"time"
)

// The state drivers of state.driver.
const (
	StateBbolt    = "bbolt"
	StatePostgres = "postgres"
)

// DefaultStateDSNEnv is the environment variable holding the PostgreSQL
// DSN when state.dsn_env is empty.
const DefaultStateDSNEnv = "POPBRIDGE_STATE_DSN"

// DefaultLeaseTTL is state.lease_ttl when empty.
const DefaultLeaseTTL = 30 * time.Second

// State chooses where the per-account state lives: bbolt (the default,
// state_dir/cache.db, one process) or PostgreSQL (shared by replicas).
// The DSN is read when the server starts (see pgstore.LoadDSN): DSN
// inline, else DSNFile, else the environment variable DSNEnv.
type State struct {
	// Driver is bbolt or postgres; empty means bbolt.
	Driver string `yaml:"driver"`
	// DSN is the PostgreSQL connection string inline; a password in it
	// is warned about (use DSNFile or DSNEnv for that).
	DSN string `yaml:"dsn"`
	// DSNFile names a file holding the DSN (mode 0600).
	DSNFile string `yaml:"dsn_file"`
	// DSNEnv names the environment variable holding the DSN; empty means
	// DefaultStateDSNEnv.
	DSNEnv string `yaml:"dsn_env"`
	// LeaseTTL is the maildrop lock's lease (postgres only); zero means
	// DefaultLeaseTTL.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
}

// Postgres reports whether the state is in PostgreSQL.
func (s State) Postgres() bool { return s.Driver == StatePostgres }

// Lease returns LeaseTTL, or DefaultLeaseTTL when zero.
func (s State) Lease() time.Duration {
	if s.LeaseTTL > 0 {
		return s.LeaseTTL
	}
	return DefaultLeaseTTL
}

// Env returns DSNEnv, or DefaultStateDSNEnv when empty.
func (s State) Env() string {
	if s.DSNEnv != "" {
		return s.DSNEnv
	}
	return DefaultStateDSNEnv
}

// InlinePassword reports whether the inline DSN holds a password, which
// then sits in the configuration file.
func (s State) InlinePassword() bool {
	d := strings.TrimSpace(s.DSN)
	if d == "" {
		return false
	}
	if strings.HasPrefix(d, "postgres://") || strings.HasPrefix(d, "postgresql://") {
		u, err := url.Parse(d)
		if err != nil {
			return strings.Contains(d, "password")
		}
		_, ok := u.User.Password()
		return ok || u.Query().Has("password")
	}
	for _, f := range strings.Fields(d) {
		if k, _, ok := strings.Cut(f, "="); ok && strings.TrimSpace(k) == "password" {
			return true
		}
	}
	return false
}

func (s *State) validate(p *problems) {
	switch s.Driver {
	case "", StateBbolt:
		for key, v := range map[string]string{"state.dsn": s.DSN, "state.dsn_file": s.DSNFile, "state.dsn_env": s.DSNEnv} {
			if v != "" {
				p.add(key, "only for driver: postgres; remove it, or set state.driver: postgres")
			}
		}
		if s.LeaseTTL != 0 {
			p.add("state.lease_ttl", "only for driver: postgres; remove it, or set state.driver: postgres")
		}
	case StatePostgres:
		if s.DSN != "" && s.DSNFile != "" {
			p.add("state.dsn", "give the DSN once: either inline (dsn) or in a file (dsn_file), not both")
		}
		if s.LeaseTTL < 0 {
			p.add("state.lease_ttl", "must be positive, e.g. 30s")
		} else if s.LeaseTTL > 0 && s.LeaseTTL < time.Second {
			p.add("state.lease_ttl", "%v is too short to renew in time; use at least 1s (30s suits most)", s.LeaseTTL)
		}
	default:
		p.add("state.driver", "unknown driver %q (want bbolt or postgres)", s.Driver)
	}
}
