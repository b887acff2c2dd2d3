// Package replicas holds no code: its tests run three popbridge
// processes (the built binary) on one private PostgreSQL, with a private
// Dovecot or the fake Gmail API as the upstream, and check what issue 18
// promises of replicas: the same listing from any replica, the maildrop
// lock across replicas, a killed or paused replica that cannot apply its
// deletes, one OAuth2 refresh for all replicas, and a PostgreSQL restart
// under load that loses nothing. Each test logs a "replicas:" line that
// .ci/run requires.
//
// The load run of docs/benchmarks.md ("Replicas on PostgreSQL") is here
// too, opt-in:
//
//	POPBENCH_REPLICAS=1 go test -v -run TestLoadReplicas -timeout 30m ./internal/replicas
package replicas
