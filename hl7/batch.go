package hl7

import (
	"fmt"
	"strconv"
)

// IsBatch reports whether the first segment of msg is FHS or BHS.
func IsBatch(msg []byte) bool {
	seg, _ := firstSegment(msg)
	id := headerID(seg)
	return id == "FHS" || id == "BHS"
}

// AppendBatchAck appends to dst the acknowledgement of the HL7 batch msg
// (FHS, BHS, MSH..., BTS, FTS; FHS/FTS or BHS/BTS optional) and returns it:
//
//	FHS|<enc>|<FHS-5>|<FHS-6>|<FHS-3>|<FHS-4>|<Time>||||<ControlID>-F|<inbound FHS-11>   (only if msg has FHS)
//	BHS|<enc>|<BHS-5>|<BHS-6>|<BHS-3>|<BHS-4>|<Time>||||<ControlID>-B|<inbound BHS-11>
//	one AppendAck per contained MSH, with MSH-10 <ControlID>-1, <ControlID>-2, ...
//	BTS|<number of messages>
//	FTS|1                                                                               (only if msg has FHS)
//
// Sender and receiver are swapped as in AppendAck; without a BHS, the BHS is
// built from the FHS and has no reference. All messages get req's code, text
// and error; every message is acknowledged in the one BHS.
//
// If msg is not a batch, AppendBatchAck is AppendAck for its header. If the
// batch header or a contained MSH cannot be parsed it returns dst unchanged
// and an error wrapping the ParseHeader error, so the caller can reject the
// whole batch with AppendAck.
func AppendBatchAck(dst []byte, msg []byte, req AckRequest) ([]byte, error) {
	h, err := ParseHeader(msg)
	if err != nil {
		return dst, err
	}
	if h.Segment == "MSH" {
		return AppendAck(dst, h, req), nil
	}
	_, rest := firstSegment(msg)
	bhs, ref := h, ""
	if h.Segment == "BHS" {
		ref = h.ControlID
	} else if b, err := ParseHeader(rest); b.Segment == "BHS" {
		if err != nil {
			return dst, fmt.Errorf("hl7: batch header BHS: %w", err)
		}
		bhs, ref = b, b.ControlID
		_, rest = firstSegment(rest)
	}

	out := dst
	if h.Segment == "FHS" {
		out = appendBatchHeader(out, "FHS", h, req, 'F', h.ControlID)
	}
	out = appendBatchHeader(out, "BHS", bhs, req, 'B', ref)
	n := 0
	for len(rest) > 0 {
		var seg []byte
		seg, rest = cut(rest)
		if headerID(seg) != "MSH" {
			continue
		}
		n++
		m, err := ParseHeader(seg)
		if err != nil {
			return dst, fmt.Errorf("hl7: batch message %d: %w", n, err)
		}
		out = appendAck(out, m, req, n)
	}
	out = append(out, "BTS"...)
	out = append(out, bhs.Separators.Field)
	out = strconv.AppendInt(out, int64(n), 10)
	out = append(out, '\r')
	if h.Segment == "FHS" {
		out = append(out, "FTS"...)
		out = append(out, h.Separators.Field, '1', '\r')
	}
	return out, nil
}

// appendBatchHeader appends an FHS or BHS (id) answering h, whose
// separators are usable since it was parsed.
func appendBatchHeader(dst []byte, id string, h Header, req AckRequest, suffix byte, ref string) []byte {
	sep := h.Separators
	fs := sep.Field
	dst = append(dst, id...)
	dst = append(dst, fs)
	dst = append(dst, h.EncodingChars...)
	for _, v := range [...]string{h.ReceivingApplication, h.ReceivingFacility, h.SendingApplication, h.SendingFacility} {
		dst = append(dst, fs)
		dst = appendRaw(dst, v, sep)
	}
	dst = append(dst, fs)
	if !req.Time.IsZero() {
		dst = req.Time.AppendFormat(dst, "20060102150405")
	}
	dst = append(dst, fs, fs, fs, fs) // fields 8..10 empty
	dst = appendRaw(dst, req.ControlID, sep)
	dst = appendRaw(dst, "-", sep) // '-' may be the field separator
	dst = append(dst, suffix)
	if ref != "" {
		dst = append(dst, fs)
		dst = appendRaw(dst, ref, sep)
	}
	return append(dst, '\r')
}
