package sim

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
)

// Files of a saved simulated chip.
const (
	chipFile      = "chip.json"
	arkCertFile   = "ark.pem"
	askCertFile   = "ask.pem"
	vcekCertFile  = "vcek.pem"
	arkKeyFile    = "ark.key"
	askKeyFile    = "ask.key"
	vcekKeyFile   = "vcek.key"
	CertChainFile = "cert_chain.pem" // ASK + ARK, what a verifier trusts
	chipFormat    = 1
)

type chipJSON struct {
	Format  int    `json:"format"`
	Product string `json:"product"`
	ChipID  string `json:"chip_id"`
	TCB     TCB    `json:"tcb"`
}

// Save writes the chip (keys, certificates, chip ID, TCB) to dir, creating
// it with mode 0700; private keys are written 0600. cert_chain.pem holds the
// ASK and ARK (RootCertsPEM) for a verifier's trust configuration.
func (p *Processor) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create simulated chip directory: %w", err)
	}
	meta, err := json.MarshalIndent(chipJSON{Format: chipFormat, Product: p.product, ChipID: hex.EncodeToString(p.chipID[:]), TCB: p.tcb}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", chipFile, err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{arkCertFile, certPEM(p.ark), 0o644},
		{askCertFile, certPEM(p.ask), 0o644},
		{vcekCertFile, certPEM(p.vcek), 0o644},
		{CertChainFile, p.RootCertsPEM(), 0o644},
	}
	for _, k := range []struct {
		name string
		key  crypto.PrivateKey
	}{{arkKeyFile, p.arkKey}, {askKeyFile, p.askKey}, {vcekKeyFile, p.vcekKey}} {
		der, err := x509.MarshalPKCS8PrivateKey(k.key)
		if err != nil {
			return fmt.Errorf("encode %s: %w", k.name, err)
		}
		files = append(files, struct {
			name string
			data []byte
			mode os.FileMode
		}{k.name, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600})
	}
	// chip.json last: a directory with chip.json is complete.
	files = append(files, struct {
		name string
		data []byte
		mode os.FileMode
	}{chipFile, append(meta, '\n'), 0o644})
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			_ = os.Remove(name)
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	return nil
}

// Load reads a chip saved with Save and checks that it is consistent (keys
// match certificates, the chain verifies, the VCEK carries the chip ID and
// TCB). A directory without chip.json yields an error wrapping
// fs.ErrNotExist.
func Load(dir string) (*Processor, error) {
	metaBytes, err := os.ReadFile(filepath.Join(dir, chipFile))
	if err != nil {
		return nil, fmt.Errorf("load simulated chip from %s: %w", dir, err)
	}
	var meta chipJSON
	if err := json.Unmarshal(metaBytes, &meta); err != nil {
		return nil, fmt.Errorf("load simulated chip: parse %s: %w", filepath.Join(dir, chipFile), err)
	}
	if meta.Format != chipFormat {
		return nil, fmt.Errorf("load simulated chip: %s has format %d, this version reads %d", filepath.Join(dir, chipFile), meta.Format, chipFormat)
	}
	p := &Processor{tcb: meta.TCB}
	if p.product, err = checkProduct(meta.Product); err != nil {
		return nil, fmt.Errorf("load simulated chip: %w", err)
	}
	id, err := hex.DecodeString(meta.ChipID)
	if err != nil || len(id) != abi.ChipIDSize {
		return nil, fmt.Errorf("load simulated chip: chip_id in %s is not %d hex-encoded bytes", chipFile, abi.ChipIDSize)
	}
	copy(p.chipID[:], id)
	if p.ark, err = readCert(dir, arkCertFile); err != nil {
		return nil, err
	}
	if p.ask, err = readCert(dir, askCertFile); err != nil {
		return nil, err
	}
	if p.vcek, err = readCert(dir, vcekCertFile); err != nil {
		return nil, err
	}
	if p.arkKey, err = readKey[*rsa.PrivateKey](dir, arkKeyFile); err != nil {
		return nil, err
	}
	if p.askKey, err = readKey[*rsa.PrivateKey](dir, askKeyFile); err != nil {
		return nil, err
	}
	if p.vcekKey, err = readKey[*ecdsa.PrivateKey](dir, vcekKeyFile); err != nil {
		return nil, err
	}
	if err := p.check(); err != nil {
		return nil, fmt.Errorf("load simulated chip from %s: %w", dir, err)
	}
	return p, nil
}

// LoadOrCreate loads the chip saved in dir, or, if there is none, creates
// one with opts and saves it there. created reports which happened.
func LoadOrCreate(dir string, opts Options) (p *Processor, created bool, err error) {
	p, err = Load(dir)
	if err == nil {
		return p, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	if p, err = New(opts); err != nil {
		return nil, false, err
	}
	if err := p.Save(dir); err != nil {
		return nil, false, err
	}
	return p, true, nil
}

func readCert(dir, name string) (*x509.Certificate, error) {
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("load simulated chip: %w", err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("load simulated chip: %s is not a PEM certificate", filepath.Join(dir, name))
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load simulated chip: parse %s: %w", filepath.Join(dir, name), err)
	}
	return c, nil
}

func readKey[K crypto.PrivateKey](dir, name string) (K, error) {
	var zero K
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return zero, fmt.Errorf("load simulated chip: %w", err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PRIVATE KEY" {
		return zero, fmt.Errorf("load simulated chip: %s is not a PEM PKCS#8 private key", filepath.Join(dir, name))
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return zero, fmt.Errorf("load simulated chip: parse %s: %w", filepath.Join(dir, name), err)
	}
	key, ok := k.(K)
	if !ok {
		return zero, fmt.Errorf("load simulated chip: %s holds a %T, want %T", filepath.Join(dir, name), k, zero)
	}
	return key, nil
}

type publicKeyEqualer interface {
	Equal(crypto.PublicKey) bool
}

// check verifies the loaded chip's internal consistency.
func (p *Processor) check() error {
	pairs := []struct {
		name string
		pub  crypto.PublicKey
		cert *x509.Certificate
	}{
		{"ARK", &p.arkKey.PublicKey, p.ark},
		{"ASK", &p.askKey.PublicKey, p.ask},
		{"VCEK", &p.vcekKey.PublicKey, p.vcek},
	}
	for _, kp := range pairs {
		if !kp.pub.(publicKeyEqualer).Equal(kp.cert.PublicKey) {
			return fmt.Errorf("the %s private key does not match the %s certificate", kp.name, kp.name)
		}
	}
	if err := p.ark.CheckSignatureFrom(p.ark); err != nil {
		return fmt.Errorf("ARK is not self-signed: %w", err)
	}
	if err := p.ask.CheckSignatureFrom(p.ark); err != nil {
		return fmt.Errorf("ASK is not signed by the ARK: %w", err)
	}
	if err := p.vcek.CheckSignatureFrom(p.ask); err != nil {
		return fmt.Errorf("VCEK is not signed by the ASK: %w", err)
	}
	if p.ark.Subject.CommonName != "ARK-"+p.product {
		return fmt.Errorf("ARK common name %q does not match product %s", p.ark.Subject.CommonName, p.product)
	}
	exts, err := kds.VcekCertificateExtensions(p.vcek)
	if err != nil {
		return fmt.Errorf("VCEK extensions: %w", err)
	}
	if !bytes.Equal(exts.HWID, p.chipID[:]) {
		return fmt.Errorf("VCEK hwID does not match chip_id in %s", chipFile)
	}
	parts := kds.DecomposeTCBVersion(exts.TCBVersion)
	if (TCB{Bootloader: parts.BlSpl, TEE: parts.TeeSpl, SNP: parts.SnpSpl, Microcode: parts.UcodeSpl}) != p.tcb {
		return fmt.Errorf("VCEK TCB does not match the tcb in %s", chipFile)
	}
	return nil
}
