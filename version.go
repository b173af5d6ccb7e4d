package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/treecast/treecast/relay"
)

// What a release build is, set by the linker (scripts/release.sh:
// -ldflags "-X main.version=v1.2.0 -X main.commit=... -X main.date=...").
// The linker can only set package variables; nothing else writes them.
var (
	version string // the release, e.g. v1.2.0
	commit  string // the full commit hash it was built from
	date    string // that commit's time, RFC 3339 in UTC
)

// buildInfo says which treecast this is.
type buildInfo struct {
	Version  string // "(devel)" when the build says nothing
	Commit   string
	Date     string
	Modified bool // built from a work tree with uncommitted changes
}

// currentBuild is what the linker set, completed from the version control
// data the go command embeds when it builds inside a repository.
func currentBuild() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Date: date}
	if bi, ok := debug.ReadBuildInfo(); ok {
		b = b.completedFrom(bi)
	}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	return b
}

// completedFrom fills the fields b lacks from bi: the main module's version
// (a tag, or a pseudo-version such as v0.0.0-20261125101500-1a2b3c4d5e6f)
// and its vcs.revision, vcs.time and vcs.modified settings.
func (b buildInfo) completedFrom(bi *debug.BuildInfo) buildInfo {
	if b.Version == "" && bi.Main.Version != "(devel)" {
		b.Version = bi.Main.Version
	}
	fromVCS := b.Commit == ""
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision" && fromVCS:
			b.Commit = s.Value
		case s.Key == "vcs.time" && b.Date == "":
			b.Date = s.Value
		case s.Key == "vcs.modified" && fromVCS:
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// String names the build, e.g.
// "treecast v1.2.0 (commit 1a2b3c4d5e6f, 2026-11-25T10:15:00Z)".
func (b buildInfo) String() string {
	s := "treecast " + b.Version
	if b.Commit != "" {
		c := b.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		s += " (commit " + c
		if b.Modified {
			s += "+modified"
		}
		if b.Date != "" {
			s += ", " + b.Date
		}
		s += ")"
	}
	return s
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, the commit it was built from, and the protocol version",
		Action: func(c *cli.Context) error {
			if err := noStrayArgs(c, 0); err != nil {
				return err
			}
			printVersion(c.App.Writer, currentBuild())
			return nil
		},
	}
}

func printVersion(w io.Writer, b buildInfo) {
	fmt.Fprintf(w, "%s, protocol %d, %s %s/%s\n", b, relay.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
