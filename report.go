package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/treecast/treecast/relay"
)

// How a seed run ends, whatever ended it (every node done, no receivers,
// a failure, Ctrl-C): the table (on stdout, or on stderr with --json), the
// report (the --report file, and with --json on stdout), and the exit code.

// Outcomes of a seed run, in the report.
const (
	outcomeOK          = "ok"           // every node applied the package (or had it), and at least --expect were found
	outcomeFailed      = "failed"       // a node failed or was busy, fewer than --expect were found, or the seed failed
	outcomeNoReceivers = "no receivers" // nothing was sent
	outcomeInterrupted = "interrupted"  // stopped by SIGINT or SIGTERM
)

// seedReport is the --report file: relay's report, and how the run ended.
type seedReport struct {
	*relay.Report
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"` // why it did not end ok
}

// seedEnd ends one seed run.
type seedEnd struct {
	ctx        context.Context // the command's: a signal that ended it is its cause
	con        *console        // stderr
	out        io.Writer       // the table
	json       io.Writer       // --json: the report goes here too; nil: nowhere
	report     string          // --report path; "" writes none
	reportName string          // the flag or key that set it, for messages
	expect     int
	start      time.Time
}

// emptyReport is the report of a run that sent nothing: pkg is what it
// would have sent (its sha256 is empty if hashing did not end).
func (e *seedEnd) emptyReport(pkg relay.ReportPackage) *relay.Report {
	return &relay.Report{Package: pkg, Seconds: time.Since(e.start).Seconds()}
}

// finish prints rep, writes the report, and returns the run's exit error:
// runErr, what rep says (a failed node, fewer than --expect), or the
// signal that stopped the run. A report that cannot be written exits 4
// (unless a signal stopped the run), after the run's own verdict is said.
func (e *seedEnd) finish(rep *relay.Report, runErr error) error {
	rep.Expected = e.expect
	if rep.Nodes == nil {
		rep.Nodes = []relay.ReportNode{} // "nodes": [], not null
	}
	var verdict *exitError
	outcome := outcomeFailed
	// A run that ended of itself is not interrupted by a signal after it.
	sig, stopped := stoppedBy(e.ctx)
	stopped = stopped && runErr != nil
	switch {
	case stopped:
		outcome = outcomeInterrupted
		for i := range rep.Nodes {
			if n := &rep.Nodes[i]; n.Status != relay.StatusOK && n.Error == "" {
				n.Error = fmt.Sprintf("interrupted: the seed was stopped by %s when this node held %s of %s; run the seed again to resume",
					sig.name(), relay.HumanBytes(n.Bytes), relay.HumanBytes(rep.Package.Size))
			}
		}
		what := "the receivers keep the blocks they verified"
		if len(rep.Nodes) == 0 {
			what = "nothing was sent"
		}
		verdict = &exitError{sig.code(), fmt.Errorf("seed: interrupted: run the same command again to resume (stopped by %s; %s)", sig.name(), what)}
	case runErr != nil:
		if !errors.As(runErr, &verdict) {
			verdict = &exitError{exitFailed, runErr}
		}
		if verdict.code == exitNotFound {
			outcome = outcomeNoReceivers
		}
	case rep.Failed() > 0 || rep.Busy() > 0 || len(rep.Nodes) < e.expect:
		verdict = &exitError{exitFailed, errors.New(shortfall(rep))}
	default:
		outcome = outcomeOK
	}
	if len(rep.Nodes) > 0 && printReport(e.out, rep) {
		e.con.printf("treecast: errors are cut to %d characters in the table, a line per node; the report (--report PATH, or --json) has them whole\n", tableErrorWidth)
	}
	sr := seedReport{Report: rep, Outcome: outcome}
	if verdict != nil {
		sr.Error = verdict.Error()
	}
	doc, err := jsonDoc(sr)
	if err != nil {
		return fmt.Errorf("seed: the report: %w", err) // cannot be: it is plain data
	}
	if e.json != nil {
		e.json.Write(doc)
	}
	if e.report == "" {
		return errOrNil(verdict)
	}
	werr := writeReport(e.report, doc)
	if werr == nil {
		return errOrNil(verdict)
	}
	rerr := &exitError{exitReport, fmt.Errorf("seed: %s %s: %w: the outcome was not saved (the table above has it): make that path writable, or give another one", e.reportName, e.report, werr)}
	if stopped {
		e.con.printf("treecast: %v\n", rerr)
		return verdict
	}
	if verdict != nil {
		e.con.printf("treecast: %v\n", verdict)
	}
	return rerr
}

// errOrNil keeps a nil *exitError from becoming a non-nil error.
func errOrNil(e *exitError) error {
	if e == nil {
		return nil
	}
	return e
}

// tableErrorWidth is the most of a node's error the seed's table shows
// (its start and its end), so each node is one line; the report has the
// error whole.
const tableErrorWidth = 80

// tableNameWidth is where the table cuts a node's name, which the node
// chose itself.
const tableNameWidth = 32

// printReport writes the table of nodes, one line each, and the summary
// line. It reports whether it cut an error to fit its line.
func printReport(w io.Writer, rep *relay.Report) (cutErrors bool) {
	names := map[string]string{"seed": "seed"}
	for _, n := range rep.Nodes {
		names[n.ID] = cut(oneLine(n.Name), tableNameWidth)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tID\tADDRESS\tPARENTS\tSTATUS\tBYTES\tSECONDS\tERROR")
	for _, n := range rep.Nodes {
		var parents []string
		for _, p := range n.Parents {
			parents = append(parents, cmp.Or(names[p], "-"))
		}
		status := n.Status
		if n.Detail != "" {
			status += " (" + n.Detail + ")"
		}
		msg := oneLine(n.Error)
		if c := shorten(msg, tableErrorWidth); c != msg {
			msg, cutErrors = c, true
		}
		fmt.Fprintf(tw, "%s\t%.8s\t%s\t%s\t%s\t%d\t%.1f\t%s\n", names[n.ID], n.ID, oneLine(n.Addr), strings.Join(parents, ","), status, n.Bytes, n.Seconds, msg)
	}
	tw.Flush()
	fmt.Fprintln(w, summary(rep))
	return cutErrors
}

// summary is the line under the table: how many nodes have the package,
// how many had it already, were busy, failed or were not found, and the
// rate, if any node downloaded it.
func summary(rep *relay.Report) string {
	busy, failed, upToDate := rep.Busy(), rep.Failed(), rep.UpToDate()
	ok := len(rep.Nodes) - busy - failed
	line := fmt.Sprintf("%s: %d of %d nodes ok", rep.Package.Name, ok, len(rep.Nodes))
	if upToDate > 0 {
		line += fmt.Sprintf(" (%d up to date)", upToDate)
	}
	if busy > 0 {
		line += fmt.Sprintf(", %d busy with another session", busy)
	}
	line += fmt.Sprintf(", %d failed", failed)
	if rep.Expected > len(rep.Nodes) {
		line += fmt.Sprintf(", %d of %d expected not found", rep.Expected-len(rep.Nodes), rep.Expected)
	}
	if ok-upToDate == 0 {
		// No node applied it in this session: there is no rate to show.
		return line + fmt.Sprintf("; in %.1fs", rep.Seconds)
	}
	rate := 0.0
	if rep.Seconds > 0 {
		rate = float64(rep.Package.Size) / rep.Seconds
	}
	return line + fmt.Sprintf("; %s in %.1fs (%s/s per node)", relay.HumanBytes(rep.Package.Size), rep.Seconds, relay.HumanBytes(int64(rate)))
}

// shortfall says why rep is a failure (exit 1): the nodes that failed,
// and the receivers expected that were not found.
func shortfall(rep *relay.Report) string {
	var why []string
	if f := rep.Failed(); f > 0 {
		why = append(why, fmt.Sprintf("%d of %d nodes failed", f, len(rep.Nodes)))
	}
	if b := rep.Busy(); b > 0 {
		why = append(why, fmt.Sprintf("%d of %d nodes busy with another session (run the seed again once it is over, or with a --wait long enough for it)", b, len(rep.Nodes)))
	}
	if rep.Expected > len(rep.Nodes) {
		why = append(why, fmt.Sprintf("%d of %d expected were not found (found %d)", rep.Expected-len(rep.Nodes), rep.Expected, len(rep.Nodes)))
	}
	return strings.Join(why, "; ")
}

// writeReport replaces path atomically with the report doc; on failure it
// leaves no temporary file behind.
func writeReport(path string, doc []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(doc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
