package config

import (
	"strings"
	"testing"
	"time"
)

func TestStateDefault(t *testing.T) {
	c, err := parseString(t, minimal)
	if err != nil {
		t.Fatal(err)
	}
	if c.State.Postgres() || c.State.Lease() != DefaultLeaseTTL || c.State.Env() != "POPBRIDGE_STATE_DSN" {
		t.Errorf("default state = %+v (postgres %v, lease %v, env %s), want bbolt", c.State, c.State.Postgres(), c.State.Lease(), c.State.Env())
	}
}

func TestStatePostgres(t *testing.T) {
	c, err := parseString(t, minimal+`
state:
  driver: postgres
  dsn_file: secrets/dsn
  dsn_env: PG_DSN
  lease_ttl: 3s
`)
	if err != nil {
		t.Fatal(err)
	}
	want := State{Driver: "postgres", DSNFile: "/etc/popbridge/secrets/dsn", DSNEnv: "PG_DSN", LeaseTTL: 3 * time.Second}
	if c.State != want {
		t.Errorf("state = %+v, want %+v", c.State, want)
	}
	if !c.State.Postgres() || c.State.Lease() != 3*time.Second || c.State.Env() != "PG_DSN" {
		t.Errorf("postgres %v, lease %v, env %s", c.State.Postgres(), c.State.Lease(), c.State.Env())
	}
}

func TestStateProblems(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"state:\n  driver: redis\n", `state.driver: unknown driver "redis" (want bbolt or postgres)`},
		{"state:\n  dsn: postgres://db/x\n", "state.dsn: only for driver: postgres"},
		{"state:\n  driver: bbolt\n  lease_ttl: 3s\n", "state.lease_ttl: only for driver: postgres"},
		{"state:\n  driver: postgres\n  dsn: postgres://db/x\n  dsn_file: /x\n", "state.dsn: give the DSN once"},
		{"state:\n  driver: postgres\n  lease_ttl: 100ms\n", "state.lease_ttl: 100ms is too short"},
		{"state:\n  driver: postgres\n  lease_ttl: -1s\n", "state.lease_ttl: must be positive"},
		{"state:\n  driver: postgres\n  lease_ttl: soon\n", "state.lease_ttl"},
	} {
		_, err := parseString(t, minimal+tc.src)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.src, err, tc.want)
		}
	}
}

func TestStateInlinePassword(t *testing.T) {
	for dsn, want := range map[string]bool{
		"":                                   false,
		"postgres://popbridge@db/pb":         false,
		"postgres://popbridge:s3cret@db/pb":  true,
		"postgresql://db/pb?password=s3cret": true,
		"host=db user=popbridge dbname=pb":   false,
		"host=db password=s3cret dbname=pb":  true,
	} {
		if got := (State{Driver: "postgres", DSN: dsn}).InlinePassword(); got != want {
			t.Errorf("%q: InlinePassword = %v, want %v", dsn, got, want)
		}
	}
}
