package dnscache

import (
	"encoding/binary"
	"errors"
)

// The request path parses queries straight from the wire: a cache hit costs
// one map lookup and one copy, with no dns.Msg built. Anything unusual falls
// back to a typed error that becomes a minimal error response.

const (
	headerLen = 12
	optRRLen  = 11 // root name, type, class, ttl, rdlen 0

	flagQR = 0x80 // byte 2
	flagTC = 0x02
	flagRD = 0x01
	flagRA = 0x80 // byte 3
	flagAD = 0x20
	flagCD = 0x10

	keyFlagDO = 1
	keyFlagCD = 2

	typeOPT  = 41
	typeAXFR = 252
	typeIXFR = 251
	classIN  = 1
)

// queryError says how a query that is not served normally is answered.
type queryError int

const (
	qeOK      queryError = iota
	qeDrop               // not a query at all (too short, a response): no answer
	qeFormErr            // malformed
	qeNotImp             // opcode other than QUERY, meta types
	qeRefused            // classes other than IN, zone transfers
	qeBadVers            // EDNS version other than 0
)

// query is a parsed question. key is the cache key: the lowercased wire name,
// type, class and the DO/CD bits.
type query struct {
	id      uint16
	rd, cd  bool
	qlen    int // wire length of the question name
	qtype   uint16
	qclass  uint16
	edns    bool
	do      bool
	udpSize int
	key     []byte // appended into the caller's buffer
}

var errBadName = errors.New("bad name")

// parseQuery parses b into q, appending the key to q.key[:0].
func parseQuery(b []byte, q *query) queryError {
	if len(b) < headerLen {
		return qeDrop
	}
	if b[2]&flagQR != 0 {
		return qeDrop // a response: never answer it (reflection loops)
	}
	q.id = binary.BigEndian.Uint16(b)
	q.rd = b[2]&flagRD != 0
	q.cd = b[3]&flagCD != 0
	q.edns, q.do, q.udpSize, q.qlen = false, false, 512, 0
	q.key = q.key[:0]
	if opcode := (b[2] >> 3) & 0xf; opcode != 0 {
		return qeNotImp
	}
	qd := binary.BigEndian.Uint16(b[4:])
	an := binary.BigEndian.Uint16(b[6:])
	ns := binary.BigEndian.Uint16(b[8:])
	ar := binary.BigEndian.Uint16(b[10:])
	if qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return qeFormErr
	}
	off := headerLen
	key, off, err := appendLowerName(q.key, b, off)
	q.key = key
	if err != nil || off+4 > len(b) {
		return qeFormErr
	}
	q.qlen = off - headerLen
	q.qtype = binary.BigEndian.Uint16(b[off:])
	q.qclass = binary.BigEndian.Uint16(b[off+2:])
	off += 4
	if ar == 1 {
		// Only an OPT record is allowed: root name, type 41.
		if off+optRRLen > len(b) || b[off] != 0 || binary.BigEndian.Uint16(b[off+1:]) != typeOPT {
			return qeFormErr
		}
		q.edns = true
		q.udpSize = max(int(binary.BigEndian.Uint16(b[off+3:])), 512)
		version := b[off+6]
		q.do = b[off+7]&0x80 != 0
		rdlen := int(binary.BigEndian.Uint16(b[off+9:]))
		off += optRRLen + rdlen
		if off > len(b) {
			return qeFormErr
		}
		if version != 0 {
			return qeBadVers
		}
	}
	if off != len(b) {
		return qeFormErr // trailing garbage
	}
	switch {
	case q.qclass != classIN:
		return qeRefused
	case q.qtype == typeAXFR || q.qtype == typeIXFR:
		return qeRefused
	case q.qtype == typeOPT || q.qtype == 0 || (q.qtype >= 128 && q.qtype <= 254):
		return qeNotImp // meta types (TKEY, TSIG, MAILA, ...) are not questions we forward
	}
	var flags byte
	if q.do {
		flags |= keyFlagDO
	}
	if q.cd {
		flags |= keyFlagCD
	}
	q.key = append(q.key, byte(q.qtype>>8), byte(q.qtype), byte(q.qclass>>8), byte(q.qclass), flags)
	return qeOK
}

// appendLowerName appends the uncompressed name at b[off:] to dst in
// lowercase wire form. Queries may not use compression pointers.
func appendLowerName(dst, b []byte, off int) ([]byte, int, error) {
	total := 0
	for {
		if off >= len(b) {
			return dst, off, errBadName
		}
		l := int(b[off])
		if l == 0 {
			return append(dst, 0), off + 1, nil
		}
		if l&0xc0 != 0 || off+1+l > len(b) {
			return dst, off, errBadName
		}
		total += l + 1
		if total > 254 {
			return dst, off, errBadName
		}
		dst = append(dst, byte(l))
		for _, c := range b[off+1 : off+1+l] {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
		}
		off += 1 + l
	}
}

// skipName skips a possibly compressed name.
func skipName(b []byte, off int) (int, error) {
	for {
		if off >= len(b) {
			return 0, errBadName
		}
		c := int(b[off])
		switch {
		case c == 0:
			return off + 1, nil
		case c&0xc0 == 0xc0:
			if off+2 > len(b) {
				return 0, errBadName
			}
			return off + 2, nil
		case c&0xc0 != 0:
			return 0, errBadName
		}
		off += 1 + c
	}
}

// ttlSlot is where a record's TTL sits in a packed message, and its value.
type ttlSlot struct {
	off uint16
	ttl uint32
}

// rrTTLs finds the offset and value of the TTL of every record in a packed
// message, skipping OPT (whose TTL field holds flags).
func rrTTLs(b []byte) (slots []ttlSlot, err error) {
	if len(b) < headerLen {
		return nil, errBadName
	}
	qd := int(binary.BigEndian.Uint16(b[4:]))
	rrs := int(binary.BigEndian.Uint16(b[6:])) + int(binary.BigEndian.Uint16(b[8:])) + int(binary.BigEndian.Uint16(b[10:]))
	off := headerLen
	for range qd {
		if off, err = skipName(b, off); err != nil {
			return nil, err
		}
		off += 4
	}
	slots = make([]ttlSlot, 0, rrs)
	for range rrs {
		if off, err = skipName(b, off); err != nil {
			return nil, err
		}
		if off+10 > len(b) {
			return nil, errBadName
		}
		typ := binary.BigEndian.Uint16(b[off:])
		if typ != typeOPT {
			slots = append(slots, ttlSlot{off: uint16(off + 4), ttl: binary.BigEndian.Uint32(b[off+4:])})
		}
		off += 10 + int(binary.BigEndian.Uint16(b[off+8:]))
		if off > len(b) {
			return nil, errBadName
		}
	}
	return slots, nil
}

// appendOPT appends an OPT record advertising size, echoing DO, and bumps ARCOUNT.
func appendOPT(b []byte, size int, do bool, extRcode byte) []byte {
	var flags byte
	if do {
		flags = 0x80
	}
	b = append(b, 0, 0, typeOPT, byte(size>>8), byte(size), extRcode, 0, flags, 0, 0, 0)
	binary.BigEndian.PutUint16(b[10:], binary.BigEndian.Uint16(b[10:])+1)
	return b
}

// errorResponse builds a minimal answer with rcode to the query in req: the
// header and, when it parsed, the question; with OPT when the query had one.
func errorResponse(dst, req []byte, q *query, qe queryError, rcode int) []byte {
	dst = append(dst[:0], req[:headerLen]...)
	dst[2] = flagQR | (req[2] & (0x78 | flagRD)) // keep opcode and RD
	dst[3] = flagRA | byte(rcode&0xf)
	if q.cd {
		dst[3] |= flagCD
	}
	for i := 4; i < headerLen; i++ {
		dst[i] = 0
	}
	if q.qlen > 0 && qe != qeFormErr {
		dst[5] = 1
		dst = append(dst, req[headerLen:headerLen+q.qlen+4]...)
	}
	if q.edns && qe != qeFormErr {
		dst = appendOPT(dst, 1232, q.do, byte(rcode>>4))
	}
	return dst
}
