package pgstore

import (
	"fmt"
	"os"
	"strings"
)

// DSNEnv is the environment variable DSNFromEnv reads when given no name.
const DSNEnv = "POPBRIDGE_STATE_DSN"

// DSNFromEnv returns the DSN in the environment variable name (DSNEnv
// when name is empty).
func DSNFromEnv(name string) (string, error) {
	if name == "" {
		name = DSNEnv
	}
	v := strings.TrimSpace(os.Getenv(name))
	if v == "" {
		return "", fmt.Errorf("pgstore: the environment variable %s holds no PostgreSQL DSN; set it to a URL such as postgres://popbridge@db.example:5432/popbridge", name)
	}
	return v, nil
}

// DSNFromFile returns the DSN in the file at path, surrounding white
// space ignored. A DSN may hold a password, so a file that every user
// of the machine may read is refused.
func DSNFromFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("pgstore: the PostgreSQL DSN file: %w", err)
	}
	if m := fi.Mode().Perm(); fi.Mode().IsRegular() && m&0o007 != 0 {
		return "", fmt.Errorf("pgstore: %s holds the PostgreSQL DSN and every user of this machine may read or change it (mode %04o); run: chmod 600 %s", path, m, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("pgstore: the PostgreSQL DSN file: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("pgstore: %s is empty; write the PostgreSQL DSN into it", path)
	}
	return v, nil
}

// LoadDSN returns the DSN given inline, else from file, else from the
// environment variable env (DSNEnv when empty), in that order.
func LoadDSN(inline, file, env string) (string, error) {
	switch {
	case strings.TrimSpace(inline) != "":
		return strings.TrimSpace(inline), nil
	case file != "":
		return DSNFromFile(file)
	}
	if env == "" {
		env = DSNEnv
	}
	if _, err := DSNFromEnv(env); err != nil {
		return "", fmt.Errorf("pgstore: no PostgreSQL DSN given: write it into a file of mode 0600 and name that file, or set the environment variable %s", env)
	}
	return DSNFromEnv(env)
}
