package relay

import (
	"fmt"
	"time"
)

// What the seed tells its caller: the session at a glance while it runs,
// and the outcome of every node at its end.

// SeedProgress is the whole session at a glance.
type SeedProgress struct {
	Nodes, Done, Failed int
	Busy                int   // busy with another session, and waited for or given up on
	Verified, Total     int64 // bytes verified on all nodes, out of nodes × size
}

// Report is the outcome of a session, one entry per planned node.
type Report struct {
	Package  ReportPackage `json:"package"`
	Seconds  float64       `json:"seconds"`
	Expected int           `json:"expected"`
	MaxRate  string        `json:"max_rate,omitempty"` // the seed's cap on what it sends, as given
	Uploaded int64         `json:"uploaded"`           // bytes the seed sent
	Nodes    []ReportNode  `json:"nodes"`
}

// ReportPackage names what was distributed.
type ReportPackage struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Empty  int64  `json:"empty"` // bytes in empty blocks, never sent
}

// ReportNode is one receiver's outcome.
type ReportNode struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Addr     string   `json:"addr"`
	Parent   string   `json:"parent"`           // the first tree's parent, as in parents[0]
	Parents  []string `json:"parents"`          // per tree, the id of the node it fetched from last, or "seed"
	Status   string   `json:"status"`           // StatusOK, StatusBusy or StatusFailed
	Detail   string   `json:"detail,omitempty"` // DetailUpToDate, or empty
	Error    string   `json:"error,omitempty"`
	Flushed  bool     `json:"flushed,omitempty"` // written to its target (--write) and flushed to stable storage
	Bytes    int64    `json:"bytes"`             // bytes verified and held
	Received int64    `json:"received"`          // bytes downloaded in this session
	Seconds  float64  `json:"seconds"`
	Output   string   `json:"output,omitempty"` // the end of what its apply's command wrote to stdout and stderr (at most 4 KiB)
}

// Failed counts the nodes that failed: refused, lost, or failed to apply.
func (r *Report) Failed() int {
	return r.count(func(n ReportNode) bool { return n.Status == StatusFailed })
}

// Busy counts the nodes that were busy with another session throughout.
func (r *Report) Busy() int {
	return r.count(func(n ReportNode) bool { return n.Status == StatusBusy })
}

// UpToDate counts the nodes that had the package applied already.
func (r *Report) UpToDate() int {
	return r.count(func(n ReportNode) bool { return n.Status == StatusOK && n.Detail == DetailUpToDate })
}

func (r *Report) count(is func(ReportNode) bool) int {
	k := 0
	for _, n := range r.Nodes {
		if is(n) {
			k++
		}
	}
	return k
}

// Node statuses in a report. Only StatusOK means the node has the package.
const (
	StatusOK     = "ok"
	StatusBusy   = "busy" // in another session the whole time: offered nothing
	StatusFailed = "failed"
)

// DetailUpToDate is the detail of an ok node that had applied the package
// already, under the same name and with the same actions: nothing was sent
// to it, and nothing run.
const DetailUpToDate = "up to date"

func (s *seedRun) report() *Report {
	r := &Report{
		Package: ReportPackage{Name: s.m.Name, Size: s.m.Size, SHA256: s.m.SumHex(), Empty: s.m.Empty()},
		Seconds: time.Since(s.start).Seconds(),
		MaxRate: s.cfg.MaxRate,
	}
	s.mu.Lock()
	r.Uploaded = s.uploaded
	s.mu.Unlock()
	for _, n := range s.nodes {
		rn := ReportNode{
			ID: n.peer.ID.String(), Name: n.peer.Name, Addr: n.peer.Addr.String(),
			Parents: n.parents[:s.t.stripes], Parent: n.parents[0],
			Status: StatusOK, Error: n.err, Flushed: n.flushed, Bytes: s.heldBytes(n), Received: n.received, Seconds: n.seconds,
			Output: n.output,
		}
		switch n.state {
		case stateOK:
			if n.upToDate {
				rn.Detail = DetailUpToDate
			}
		case stateBusy:
			rn.Status = StatusBusy
		default:
			rn.Status = StatusFailed
		}
		r.Nodes = append(r.Nodes, rn)
	}
	for _, p := range s.refused {
		r.Nodes = append(r.Nodes, ReportNode{
			ID: p.ID.String(), Name: p.Name, Addr: p.Addr.String(), Status: StatusFailed,
			Error: fmt.Sprintf("not taken: one session takes at most %d receivers (max_nodes)", s.cfg.MaxNodes),
		})
	}
	return r
}
