package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// errShort reports a payload that ends before its fields do.
var errShort = errors.New("payload too short")

// enc appends big-endian fields to a byte slice.
type enc struct{ b []byte }

func (e *enc) u8(v uint8)      { e.b = append(e.b, v) }
func (e *enc) u16(v uint16)    { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *enc) u32(v uint32)    { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64)    { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *enc) raw(p []byte)    { e.b = append(e.b, p...) }
func (e *enc) str(s string)    { e.u32(uint32(len(s))); e.b = append(e.b, s...) }
func (e *enc) blob(p []byte)   { e.u32(uint32(len(p))); e.b = append(e.b, p...) }
func (e *enc) id(v [16]byte)   { e.b = append(e.b, v[:]...) }
func (e *enc) hash(v [32]byte) { e.b = append(e.b, v[:]...) }
func (e *enc) i64(v int64)     { e.u64(uint64(v)) }

func (e *enc) bool(v bool) {
	if v {
		e.u8(1)
		return
	}
	e.u8(0)
}

// dec reads big-endian fields; the first error sticks and later reads return zero values.
type dec struct {
	b   []byte
	err error
}

func (d *dec) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = errShort
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *dec) u8() uint8 {
	p := d.take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (d *dec) u16() uint16 {
	p := d.take(2)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint16(p)
}

func (d *dec) u32() uint32 {
	p := d.take(4)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

func (d *dec) u64() uint64 {
	p := d.take(8)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

func (d *dec) i64() int64 { return int64(d.u64()) }

func (d *dec) bool() bool {
	switch v := d.u8(); v {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail(fmt.Errorf("bad boolean %d", v))
		return false
	}
}

func (d *dec) id() (v [16]byte) {
	copy(v[:], d.take(16))
	return v
}

func (d *dec) hash() (v [32]byte) {
	copy(v[:], d.take(32))
	return v
}

// blob reads a length-prefixed byte string of at most max bytes.
func (d *dec) blob(max int) []byte {
	n := d.u32()
	if d.err == nil && uint64(n) > uint64(max) {
		d.fail(fmt.Errorf("field of %d bytes exceeds limit %d", n, max))
		return nil
	}
	return d.take(int(n))
}

func (d *dec) str(max int) string { return string(d.blob(max)) }

func (d *dec) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}
