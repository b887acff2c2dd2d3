package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"

	"github.com/popbridge/popbridge/config"
)

// logTimeFormat is RFC 3339 with milliseconds, for the JSON "time" field.
const logTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// newLogger returns the logger described by lc, writing to w and, as
// JSON, to each of also (the admin page's log ring). Fields holding a
// duration say their unit in their name (duration_ms).
func newLogger(w io.Writer, lc config.Log, also ...io.Writer) (zerolog.Logger, error) {
	level := zerolog.InfoLevel
	if lc.Level != "" {
		var err error
		if level, err = zerolog.ParseLevel(lc.Level); err != nil {
			return zerolog.Logger{}, fmt.Errorf("log.level: %w", err)
		}
	}
	tty := isTerminal(w)
	var console bool
	switch lc.Format {
	case "", "auto":
		console = tty
	case "console":
		console = true
	case "json":
	default:
		return zerolog.Logger{}, fmt.Errorf("log.format: unknown format %q", lc.Format)
	}
	if zerolog.TimeFieldFormat != logTimeFormat { // a global: written once, not under a running server
		zerolog.TimeFieldFormat = logTimeFormat
	}
	if console {
		w = zerolog.ConsoleWriter{Out: w, NoColor: !tty, TimeFormat: time.DateTime}
	}
	if len(also) > 0 {
		w = zerolog.MultiLevelWriter(append([]io.Writer{w}, also...)...)
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
