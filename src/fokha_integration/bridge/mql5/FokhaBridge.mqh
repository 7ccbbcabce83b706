//+------------------------------------------------------------------+
//| FokhaBridge.mqh                                                  |
//| The EA side of the fokha-integration file bridge, protocol v1.   |
//|                                                                  |
//| The contract is docs/protocols/file-bridge.md (section numbers   |
//| in the comments below refer to it). This file implements exactly |
//| that: find, load, check, claim, journal, handle, reply, ack,     |
//| heartbeat, snapshots.                                            |
//|                                                                  |
//| NOTE: no MQL5 compiler was available where this file was written |
//| and tested. The protocol is checked in the Python test suite by  |
//| an EA emulator written from the same spec. Compile it in         |
//| MetaEditor (F7) before use and report any compiler message.      |
//|                                                                  |
//| Usage: derive from CFokhaBridge, override OnMessage(), call      |
//| Init() in OnInit, OnTimer() from the EA's OnTimer. See           |
//| FokhaBridgeExample.mq5.                                          |
//+------------------------------------------------------------------+
#property strict

#include <Generic\HashMap.mqh>

#define FOKHA_VERSION        "1"
#define FOKHA_MAX_FRAME      1048576     // bytes, same default as the Python side
#define FOKHA_MAX_HEADER     128
#define FOKHA_CHECK_OK       0
#define FOKHA_CHECK_INCOMPLETE 1
#define FOKHA_CHECK_CORRUPT  2
#define FOKHA_JOURNAL_KEEP   100000      // records kept when the journal is compacted

//--- one incoming message (spec section 5)
struct FokhaMessage
  {
   string            name;          // file name in cur/
   string            id;
   long              seq;
   string            type;          // message | request | reply
   string            kind;
   string            sender;
   string            body;          // raw JSON object text
   string            in_reply_to;   // replies only
   string            status;        // replies only
   string            details;       // replies only, raw JSON object text
   bool              redelivered;   // a previous run began it and did not finish (6.2 step 4)
  };

//+------------------------------------------------------------------+
//| CRC-32 (IEEE, as zlib): table driven                             |
//+------------------------------------------------------------------+
uint g_fokha_crc_table[256];
bool g_fokha_crc_ready = false;

void FokhaCrcInit()
  {
   if(g_fokha_crc_ready)
      return;
   for(uint n = 0; n < 256; n++)
     {
      uint c = n;
      for(int k = 0; k < 8; k++)
         c = ((c & 1) != 0) ? (0xEDB88320 ^ (c >> 1)) : (c >> 1);
      g_fokha_crc_table[n] = c;
     }
   g_fokha_crc_ready = true;
  }

// crc = CRC of earlier bytes (0 to start); returns the CRC including data[start..start+count)
uint FokhaCrcUpdate(uint crc, const uchar &data[], int start, int count)
  {
   FokhaCrcInit();
   uint c = crc ^ 0xFFFFFFFF;
   for(int i = start; i < start + count; i++)
      c = g_fokha_crc_table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
   return c ^ 0xFFFFFFFF;
  }

//+------------------------------------------------------------------+
//| Small helpers                                                    |
//+------------------------------------------------------------------+
// UTF-8 bytes of a string, without the terminating 0 StringToCharArray adds
int FokhaUtf8(const string text, uchar &out[])
  {
   ArrayResize(out, 0);
   int n = StringToCharArray(text, out, 0, WHOLE_ARRAY, CP_UTF8);
   if(n > 0 && out[n - 1] == 0)
      n--;
   ArrayResize(out, n);
   return n;
  }

bool FokhaIsDigit(const ushort c)   { return c >= '0' && c <= '9'; }
bool FokhaIsIdChar(const ushort c)
  {
   return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == '-';
  }

bool FokhaValidId(const string id)
  {
   int n = StringLen(id);
   if(n < 1 || n > 64)
      return false;
   for(int i = 0; i < n; i++)
      if(!FokhaIsIdChar(StringGetCharacter(id, i)))
         return false;
   return true;
  }

// Full-name check after FileFindFirst/Next: the mask also matches 8.3 short names (section 3)
bool FokhaParseName(const string name, long &seq, string &sender, string &id)
  {
   int n = StringLen(name);
   if(n < 20 + 1 + 1 + 1 + 1 + 4 || StringSubstr(name, n - 4) != ".fkb")
      return false;
   for(int i = 0; i < 20; i++)
      if(!FokhaIsDigit(StringGetCharacter(name, i)))
         return false;
   if(StringGetCharacter(name, 20) != '-')
      return false;
   int dash = StringFind(name, "-", 21);
   if(dash < 22 || dash - 21 > 32)
      return false;
   sender = StringSubstr(name, 21, dash - 21);
   for(int i = 0; i < StringLen(sender); i++)
     {
      ushort c = StringGetCharacter(sender, i);
      if(c == '-' || !FokhaIsIdChar(c))
         return false;
     }
   id = StringSubstr(name, dash + 1, n - 4 - dash - 1);
   if(!FokhaValidId(id))
      return false;
   seq = StringToInteger(StringSubstr(name, 0, 20));
   return true;
  }

//+------------------------------------------------------------------+
//| Minimal JSON reading: the raw text of a top-level key's value.   |
//| Enough for the protocol's flat objects; strings are unescaped by |
//| FokhaJsonUnquote.                                                |
//+------------------------------------------------------------------+
int FokhaJsonSkipWs(const string s, int i)
  {
   int n = StringLen(s);
   while(i < n)
     {
      ushort c = StringGetCharacter(s, i);
      if(c != ' ' && c != '\t' && c != '\r' && c != '\n')
         break;
      i++;
     }
   return i;
  }

// index just after the JSON value starting at i, or -1
int FokhaJsonValueEnd(const string s, int i)
  {
   int n = StringLen(s);
   if(i >= n)
      return -1;
   ushort c = StringGetCharacter(s, i);
   if(c == '"')
     {
      for(int j = i + 1; j < n; j++)
        {
         ushort d = StringGetCharacter(s, j);
         if(d == '\\')
            j++;
         else
            if(d == '"')
               return j + 1;
        }
      return -1;
     }
   if(c == '{' || c == '[')
     {
      int depth = 0;
      for(int j = i; j < n; j++)
        {
         ushort d = StringGetCharacter(s, j);
         if(d == '"')
           {
            j = FokhaJsonValueEnd(s, j) - 1;
            if(j < 0)
               return -1;
            continue;
           }
         if(d == '{' || d == '[')
            depth++;
         if(d == '}' || d == ']')
           {
            depth--;
            if(depth == 0)
               return j + 1;
           }
        }
      return -1;
     }
   int j = i;
   while(j < n)
     {
      ushort d = StringGetCharacter(s, j);
      if(d == ',' || d == '}' || d == ']' || d == ' ' || d == '\n' || d == '\r' || d == '\t')
         break;
      j++;
     }
   return j;
  }

ushort FokhaHex4(const string h)
  {
   ushort v = 0;
   for(int i = 0; i < StringLen(h); i++)
     {
      ushort c = StringGetCharacter(h, i);
      ushort d = 0;
      if(c >= '0' && c <= '9')
         d = (ushort)(c - '0');
      else
         if(c >= 'a' && c <= 'f')
            d = (ushort)(c - 'a' + 10);
         else
            if(c >= 'A' && c <= 'F')
               d = (ushort)(c - 'A' + 10);
      v = (ushort)(v * 16 + d);
     }
   return v;
  }

// ArraySort sorts numbers only: an insertion sort for file names (byte order for ASCII)
void FokhaSortStrings(string &a[])
  {
   int n = ArraySize(a);
   for(int i = 1; i < n; i++)
     {
      string key = a[i];
      int j = i - 1;
      while(j >= 0 && StringCompare(a[j], key, true) > 0)
        {
         a[j + 1] = a[j];
         j--;
        }
      a[j + 1] = key;
     }
  }

string FokhaJsonUnquote(const string raw)
  {
   int n = StringLen(raw);
   if(n < 2 || StringGetCharacter(raw, 0) != '"')
      return raw;
   string out = "";
   for(int i = 1; i < n - 1; i++)
     {
      ushort c = StringGetCharacter(raw, i);
      if(c != '\\')
        {
         out += ShortToString(c);
         continue;
        }
      i++;
      ushort e = StringGetCharacter(raw, i);
      if(e == 'n')
         out += "\n";
      else
         if(e == 't')
            out += "\t";
         else
            if(e == 'r')
               out += "\r";
            else
               if(e == 'b')
                  out += ShortToString(8);
               else
                  if(e == 'f')
                     out += ShortToString(12);
                  else
                     if(e == 'u' && i + 4 < n)
                       {
                        out += ShortToString(FokhaHex4(StringSubstr(raw, i + 1, 4)));
                        i += 4;
                       }
                     else
                        out += ShortToString(e);   // \" \\ \/
     }
   return out;
  }

// raw text of the value of top-level key `key`, "" when absent
string FokhaJsonGet(const string json, const string key)
  {
   int i = FokhaJsonSkipWs(json, 0);
   if(i >= StringLen(json) || StringGetCharacter(json, i) != '{')
      return "";
   i++;
   while(true)
     {
      i = FokhaJsonSkipWs(json, i);
      if(i >= StringLen(json) || StringGetCharacter(json, i) == '}')
         return "";
      int kend = FokhaJsonValueEnd(json, i);
      if(kend < 0)
         return "";
      string k = FokhaJsonUnquote(StringSubstr(json, i, kend - i));
      i = FokhaJsonSkipWs(json, kend);
      if(StringGetCharacter(json, i) != ':')
         return "";
      i = FokhaJsonSkipWs(json, i + 1);
      int vend = FokhaJsonValueEnd(json, i);
      if(vend < 0)
         return "";
      if(k == key)
         return StringSubstr(json, i, vend - i);
      i = FokhaJsonSkipWs(json, vend);
      if(StringGetCharacter(json, i) == ',')
         i++;
     }
   return "";
  }

string FokhaJsonQuote(const string s)
  {
   string out = "\"";
   for(int i = 0; i < StringLen(s); i++)
     {
      ushort c = StringGetCharacter(s, i);
      if(c == '"')
         out += "\\\"";
      else
         if(c == '\\')
            out += "\\\\";
         else
            if(c == '\n')
               out += "\\n";
            else
               if(c == '\r')
                  out += "\\r";
               else
                  if(c == '\t')
                     out += "\\t";
                  else
                     if(c < 0x20)
                        out += StringFormat("\\u%04x", c);
                     else
                        out += ShortToString(c);
     }
   return out + "\"";
  }

//--- insert or replace in a CHashMap
void FokhaPut(CHashMap<string, string> &m, const string key, const string value)
  {
   if(!m.TrySetValue(key, value))
      m.Add(key, value);
  }
void FokhaPut(CHashMap<string, long> &m, const string key, const long value)
  {
   if(!m.TrySetValue(key, value))
      m.Add(key, value);
  }
void FokhaPut(CHashMap<string, ulong> &m, const string key, const ulong value)
  {
   if(!m.TrySetValue(key, value))
      m.Add(key, value);
  }

//+------------------------------------------------------------------+
//| The bridge                                                       |
//+------------------------------------------------------------------+
class CFokhaBridge
  {
protected:
   string            m_root;        // bridge folder inside MQL5\Files (or Common\Files)
   int               m_common;      // 0 or FILE_COMMON
   string            m_local;       // "ea"
   string            m_peer;        // "py"
   string            m_in;          // m_root\py2ea
   string            m_out;         // m_root\ea2py
   string            m_journal;     // m_root\state\ea.journal
   string            m_instance;
   long              m_last_seq;
   uint              m_grace_ms;
   ulong             m_last_beat;
   uint              m_beat_ms;
   CHashMap<string, string> m_state;      // id -> "B" | "D"
   CHashMap<string, string> m_reply_id;   // id -> reply id ("-" for none)
   CHashMap<string, string> m_reply;      // id -> reply payload ("-" for none)
   CHashMap<string, long>   m_seen_size;  // not-ready file -> size when first seen
   CHashMap<string, ulong>  m_seen_at;    // not-ready file -> GetTickCount64() then

public:
                     CFokhaBridge(void) : m_common(0), m_last_seq(0), m_grace_ms(5000),
                     m_last_beat(0), m_beat_ms(1000) {}

   //--- override: handle one message. For a request set status (executed, rejected,
   //--- failed, accepted) and details_json (a JSON object text) and return true.
   //--- msg.redelivered: a previous run began this id and may have executed it already:
   //--- look for the effect (e.g. a deal whose comment is msg.id) before acting.
   virtual bool      OnMessage(FokhaMessage &msg, string &status, string &details_json)
     {
      status = "rejected";
      details_json = "{\"message\":\"no handler\"}";
      return true;
     }

   bool              Init(const string root, const bool common = false,
                          const string local = "ea", const string peer = "py");
   void              OnTimer(void);
   bool              WriteSnapshot(const string name, const string body_json);
   bool              SendMessage(const string kind, const string body_json, string id = "");

protected:
   string            Path(const string dir, const string sub, const string name)
     { return dir + "\\" + sub + "\\" + name; }
   long              NextSeq(void);
   int               CheckFrame(const uchar &buf[], const int size, string &id, long &seq,
                                string &payload, string &code);
   bool              BuildFrame(const string id, const long seq, const string payload, uchar &out[]);
   bool              WriteBytes(const string path, const uchar &data[]);
   bool              Publish(const string dir, const string name, const uchar &frame[]);
   bool              AppendJournal(const string line);
   void              LoadJournal(void);
   void              RecoverTmp(void);
   void              ReconcileCur(void);
   void              Poll(void);
   void              Process(const string name, const string id, const long seq, const string payload);
   void              SendReply(const string reply_id, const string payload);
   void              ToBad(const string sub, const string name, const string code);
   int               List(const string folder, string &names[]);
  };

//--- create folders, load the journal, recover, reconcile (sections 6.1 step 4 and 6.2 step 1)
bool CFokhaBridge::Init(const string root, const bool common, const string local, const string peer)
  {
   m_root = root;
   m_common = common ? FILE_COMMON : 0;
   m_local = local;
   m_peer = peer;
   m_in = root + "\\" + peer + "2" + local;
   m_out = root + "\\" + local + "2" + peer;
   m_journal = root + "\\state\\" + local + ".journal";
   m_instance = IntegerToString((long)GetMicrosecondCount()) + "-" + IntegerToString(MathRand());
   string subs[6] = {"tmp", "new", "cur", "bad", "done", "snap"};
   for(int i = 0; i < 6; i++)
     {
      FolderCreate(m_in + "\\" + subs[i], m_common);
      FolderCreate(m_out + "\\" + subs[i], m_common);
     }
   FolderCreate(root + "\\state", m_common);
   LoadJournal();
   RecoverTmp();
   ReconcileCur();
   return true;
  }

//--- call from the EA's OnTimer (EventSetMillisecondTimer(20) or so: the floor is ~10-16 ms)
void CFokhaBridge::OnTimer(void)
  {
   ulong now = GetTickCount64();
   if(now - m_last_beat >= m_beat_ms)
     {
      m_last_beat = now;
      string body = "{\"instance\":" + FokhaJsonQuote(m_instance) + ",\"time\":" +
                    IntegerToString((long)TimeGMT()) + "}";
      WriteSnapshot("heartbeat", body);
     }
   Poll();
  }

long CFokhaBridge::NextSeq(void)
  {
   long t = (long)TimeGMT() * 1000000;
   m_last_seq = (m_last_seq + 1 > t) ? m_last_seq + 1 : t;
   return m_last_seq;
  }

//--- section 4.1; returns FOKHA_CHECK_OK / _INCOMPLETE / _CORRUPT
int CFokhaBridge::CheckFrame(const uchar &buf[], const int size, string &id, long &seq,
                             string &payload, string &code)
  {
   if(size > FOKHA_MAX_FRAME)
     { code = "too_large"; return FOKHA_CHECK_CORRUPT; }
   int lf = -1;
   for(int i = 0; i < size && i < FOKHA_MAX_HEADER; i++)
      if(buf[i] == '\n')
        { lf = i; break; }
   uchar magic[];
   FokhaUtf8("FOKHA ", magic);
   if(lf < 0)
     {
      for(int i = 0; i < size && i < 6; i++)
         if(buf[i] != magic[i])
           { code = "bad_magic"; return FOKHA_CHECK_CORRUPT; }
      if(size >= FOKHA_MAX_HEADER)
        { code = "bad_header"; return FOKHA_CHECK_CORRUPT; }
      code = "incomplete";
      return FOKHA_CHECK_INCOMPLETE;
     }
   string header = CharArrayToString(buf, 0, lf, CP_UTF8);
   string f[];
   int nf = StringSplit(header, ' ', f);
   if(nf < 1 || f[0] != "FOKHA")
     { code = "bad_magic"; return FOKHA_CHECK_CORRUPT; }
   if(nf < 2 || f[1] != FOKHA_VERSION)
     { code = "unsupported_version"; return FOKHA_CHECK_CORRUPT; }
   if(nf != 6 || !FokhaValidId(f[2]))
     { code = "bad_header"; return FOKHA_CHECK_CORRUPT; }
   int lens[3] = {20, 10, 8};
   for(int k = 0; k < 3; k++)
     {
      string v = f[3 + k];
      int n = StringLen(v);
      if(n < 1 || n > lens[k] || (k == 2 && n != 8))
        { code = "bad_header"; return FOKHA_CHECK_CORRUPT; }
      for(int i = 0; i < n; i++)
        {
         ushort c = StringGetCharacter(v, i);
         bool ok = FokhaIsDigit(c) || (k == 2 && c >= 'a' && c <= 'f');
         if(!ok)
           { code = "bad_header"; return FOKHA_CHECK_CORRUPT; }
        }
     }
   long length = StringToInteger(f[4]);
   long total = lf + 1 + length + 5;
   if(total > FOKHA_MAX_FRAME)
     { code = "too_large"; return FOKHA_CHECK_CORRUPT; }
   if(size < total)
     { code = "incomplete"; return FOKHA_CHECK_INCOMPLETE; }
   // CRC over the header up to the crc field (lf - 8 bytes), then the payload
   uint crc = FokhaCrcUpdate(0, buf, 0, lf - 8);
   crc = FokhaCrcUpdate(crc, buf, lf + 1, (int)length);
   if(StringFormat("%08x", crc) != f[5])
     { code = "bad_crc"; return FOKHA_CHECK_CORRUPT; }
   int e = lf + 1 + (int)length;
   if(buf[e] != '\n' || buf[e + 1] != 'E' || buf[e + 2] != 'N' || buf[e + 3] != 'D' || buf[e + 4] != '\n')
     { code = "bad_end_marker"; return FOKHA_CHECK_CORRUPT; }
   if(size != total)
     { code = "trailing_data"; return FOKHA_CHECK_CORRUPT; }
   if(length >= 3 && buf[lf + 1] == 0xEF && buf[lf + 2] == 0xBB && buf[lf + 3] == 0xBF)
     { code = "bad_utf8"; return FOKHA_CHECK_CORRUPT; }
   payload = CharArrayToString(buf, lf + 1, (int)length, CP_UTF8);
   // Invalid UTF-8 decodes to U+FFFD; round-trip to detect it (a payload may not
   // legitimately contain U+FFFD bytes EF BF BD unless they were in the file).
   uchar check[];
   int n2 = FokhaUtf8(payload, check);
   bool same = (n2 == length);
   for(int i = 0; same && i < n2; i++)
      same = (check[i] == buf[lf + 1 + i]);
   if(!same)
     { code = "bad_utf8"; return FOKHA_CHECK_CORRUPT; }
   string trimmed = payload;
   StringTrimLeft(trimmed);
   StringTrimRight(trimmed);
   if(StringLen(trimmed) < 2 || StringGetCharacter(trimmed, 0) != '{' ||
      FokhaJsonValueEnd(trimmed, 0) != StringLen(trimmed))
     { code = "bad_json"; return FOKHA_CHECK_CORRUPT; }
   id = f[2];
   seq = StringToInteger(f[3]);
   code = "";
   return FOKHA_CHECK_OK;
  }

bool CFokhaBridge::BuildFrame(const string id, const long seq, const string payload, uchar &out[])
  {
   uchar body[];
   int blen = FokhaUtf8(payload, body);
   uchar prefix[];
   int plen = FokhaUtf8("FOKHA " + FOKHA_VERSION + " " + id + " " + IntegerToString(seq) + " " +
                        IntegerToString(blen) + " ", prefix);
   uint crc = FokhaCrcUpdate(0, prefix, 0, plen);
   crc = FokhaCrcUpdate(crc, body, 0, blen);
   uchar crcline[];
   int clen = FokhaUtf8(StringFormat("%08x", crc) + "\n", crcline);
   uchar tail[];
   FokhaUtf8("\nEND\n", tail);
   ArrayResize(out, 0);
   ArrayCopy(out, prefix, 0, 0, plen);
   ArrayCopy(out, crcline, plen, 0, clen);
   ArrayCopy(out, body, plen + clen, 0, blen);
   ArrayCopy(out, tail, plen + clen + blen, 0, 5);
   return true;
  }

//--- FileOpen..FileWriteArray..FileFlush..FileClose: MQL5 buffers until flush/close
bool CFokhaBridge::WriteBytes(const string path, const uchar &data[])
  {
   int h = FileOpen(path, FILE_WRITE | FILE_BIN | m_common);
   if(h == INVALID_HANDLE)
      return false;
   uint n = FileWriteArray(h, data, 0, ArraySize(data));
   FileFlush(h);
   FileClose(h);
   return n == (uint)ArraySize(data);
  }

//--- section 6.1: write into tmp\, then move into dir\new\ (FILE_REWRITE: recovery may redo it)
bool CFokhaBridge::Publish(const string dir, const string name, const uchar &frame[])
  {
   string tmp = Path(m_out, "tmp", name);
   if(!WriteBytes(tmp, frame))
      return false;
   for(int attempt = 0; attempt < 20; attempt++)
     {
      if(FileMove(tmp, m_common, dir + "\\" + name, FILE_REWRITE | m_common))
         return true;
      Sleep(attempt < 5 ? (1 << attempt) : 32);   // sharing violation: the reader has it open
     }
   PrintFormat("fokha: cannot move %s (error %d); it stays in tmp and is retried at start-up", name, GetLastError());
   return false;
  }

bool CFokhaBridge::AppendJournal(const string line)
  {
   int h = FileOpen(m_journal, FILE_READ | FILE_WRITE | FILE_BIN | m_common);
   if(h == INVALID_HANDLE)
      return false;
   FileSeek(h, 0, SEEK_END);
   uchar data[];
   int n = FokhaUtf8(line + "\n", data);
   FileWriteArray(h, data, 0, n);
   FileFlush(h);
   FileClose(h);
   return true;
  }

//--- section 6.3: B / D records; a torn last line (no LF) or a bad crc is ignored
void CFokhaBridge::LoadJournal(void)
  {
   uchar raw[];
   if(!FileIsExist(m_journal, m_common) || FileLoad(m_journal, raw, m_common) <= 0)
      return;
   string text = CharArrayToString(raw, 0, ArraySize(raw), CP_UTF8);
   string lines[];
   int n = StringSplit(text, '\n', lines);
   // StringSplit gives a last element after the final LF: "" when the file ends with LF.
   // Retention (section 6.3): keep the newest FOKHA_JOURNAL_KEEP records and rewrite.
   int first = (n - 1 - FOKHA_JOURNAL_KEEP > 0) ? n - 1 - FOKHA_JOURNAL_KEEP : 0;
   if(first > 0)
     {
      string tmp = m_journal + ".tmp";
      int h = FileOpen(tmp, FILE_WRITE | FILE_BIN | m_common);
      if(h != INVALID_HANDLE)
        {
         for(int i = first; i < n - 1; i++)
           {
            uchar line[];
            int ln = FokhaUtf8(lines[i] + "\n", line);
            FileWriteArray(h, line, 0, ln);
           }
         FileFlush(h);
         FileClose(h);
         FileMove(tmp, m_common, m_journal, FILE_REWRITE | m_common);
        }
     }
   for(int i = first; i < n - 1; i++)
     {
      string p[];
      // reply payloads contain spaces: split the first five fields only
      int k = StringSplit(lines[i], ' ', p);
      if(k == 3 && p[0] == "B")
        {
         if(!m_state.ContainsKey(p[2]))
            m_state.Add(p[2], "B");
        }
      else
         if(k >= 6 && p[0] == "D")
           {
            int start = StringLen(p[0] + " " + p[1] + " " + p[2] + " " + p[3] + " " + p[4] + " ");
            string reply = StringSubstr(lines[i], start);
            uchar covered[];
            int cn = FokhaUtf8(p[2] + " " + p[3] + " " + reply, covered);
            if(StringFormat("%08x", FokhaCrcUpdate(0, covered, 0, cn)) != p[4])
               continue;
            FokhaPut(m_state, p[2], "D");
            FokhaPut(m_reply_id, p[2], p[3]);
            FokhaPut(m_reply, p[2], reply);
           }
     }
  }

int CFokhaBridge::List(const string folder, string &names[])
  {
   ArrayResize(names, 0);
   string found;
   long h = FileFindFirst(folder + "\\*.fkb", found, m_common);
   if(h == INVALID_HANDLE)
      return 0;
   do
     {
      long seq;
      string sender, id;
      // the mask matches short 8.3 names too ("x.fkbak"): check the full name
      if(FokhaParseName(found, seq, sender, id))
        {
         int n = ArraySize(names);
         ArrayResize(names, n + 1);
         names[n] = found;
        }
     }
   while(FileFindNext(h, found));
   FileFindClose(h);
   FokhaSortStrings(names);
   return ArraySize(names);
  }

//--- section 6.1 step 4: publish complete frames left in tmp\, delete the rest
void CFokhaBridge::RecoverTmp(void)
  {
   string names[];
   int n = List(m_out + "\\tmp", names);
   for(int i = 0; i < n; i++)
     {
      long seq;
      string sender, id;
      FokhaParseName(names[i], seq, sender, id);
      if(sender != m_local)
         continue;
      if(seq > m_last_seq)
         m_last_seq = seq;
      uchar buf[];
      string path = Path(m_out, "tmp", names[i]);
      long size = FileLoad(path, buf, m_common);
      string fid, payload, code;
      long fseq;
      if(size > 0 && CheckFrame(buf, (int)size, fid, fseq, payload, code) == FOKHA_CHECK_OK)
         FileMove(path, m_common, Path(m_out, "new", names[i]), FILE_REWRITE | m_common);
      else
         FileDelete(path, m_common);
     }
   string found;
   long h = FileFindFirst(m_out + "\\tmp\\*.snap", found, m_common);
   if(h != INVALID_HANDLE)
     {
      do
        {
         if(StringLen(found) > 5 && StringSubstr(found, StringLen(found) - 5) == ".snap" &&
            StringFind(found, "." + m_local + ".snap") > 0)
            FileDelete(Path(m_out, "tmp", found), m_common);
        }
      while(FileFindNext(h, found));
      FileFindClose(h);
     }
   string mine[];
   n = List(m_out + "\\new", mine);
   for(int i = 0; i < n; i++)
     {
      long seq;
      string sender, id;
      FokhaParseName(mine[i], seq, sender, id);
      if(sender == m_local && seq > m_last_seq)
         m_last_seq = seq;
     }
  }

//--- section 6.2 step 1: leftovers in cur\ are processed, never wiped
void CFokhaBridge::ReconcileCur(void)
  {
   string names[];
   int n = List(m_in + "\\cur", names);
   for(int i = 0; i < n; i++)
     {
      string path = Path(m_in, "cur", names[i]);
      if(FileIsExist(Path(m_in, "new", names[i]), m_common))
        {
         FileDelete(path, m_common);   // an interrupted copy: new\ still has the original
         continue;
        }
      uchar buf[];
      long size = FileLoad(path, buf, m_common);
      string id, payload, code;
      long seq;
      int r = (size < 0) ? FOKHA_CHECK_INCOMPLETE : CheckFrame(buf, (int)size, id, seq, payload, code);
      if(r != FOKHA_CHECK_OK)
        {
         ToBad("cur", names[i], r == FOKHA_CHECK_INCOMPLETE ? "incomplete" : code);
         continue;
        }
      Process(names[i], id, seq, payload);
     }
  }

//--- section 6.2 steps 2-3
void CFokhaBridge::Poll(void)
  {
   string names[];
   int n = List(m_in + "\\new", names);
   for(int i = 0; i < n; i++)
     {
      string path = Path(m_in, "new", names[i]);
      uchar buf[];
      long size = FileLoad(path, buf, m_common);
      if(size < 0)
         continue;   // vanished or in use: next pass
      string id, payload, code;
      long seq;
      int r = CheckFrame(buf, (int)size, id, seq, payload, code);
      if(r != FOKHA_CHECK_OK)
        {
         // not ready yet: move to bad\ only after it stayed unchanged for the grace period
         long seen_size;
         ulong seen_at;
         if(!m_seen_size.TryGetValue(names[i], seen_size) || seen_size != size)
           {
            FokhaPut(m_seen_size, names[i], size);
            FokhaPut(m_seen_at, names[i], GetTickCount64());
           }
         else
            if(m_seen_at.TryGetValue(names[i], seen_at) && GetTickCount64() - seen_at >= m_grace_ms)
              {
               m_seen_size.Remove(names[i]);
               m_seen_at.Remove(names[i]);
               ToBad("new", names[i], code);
              }
         continue;
        }
      m_seen_size.Remove(names[i]);
      m_seen_at.Remove(names[i]);
      // claim: new\ -> cur\ (FILE_REWRITE: a partial copy of an interrupted claim may be there)
      if(!FileMove(path, m_common, Path(m_in, "cur", names[i]), FILE_REWRITE | m_common))
         continue;
      Process(names[i], id, seq, payload);
     }
  }

//--- section 6.2 steps 4-7
void CFokhaBridge::Process(const string name, const string id, const long seq, const string payload)
  {
   long nseq;
   string nsender, nid;
   FokhaParseName(name, nseq, nsender, nid);
   if(nid != id || nseq != seq)
     {
      ToBad("cur", name, "name_mismatch");
      return;
     }
   FokhaMessage msg;
   msg.name = name;
   msg.id = id;
   msg.seq = seq;
   msg.type = FokhaJsonUnquote(FokhaJsonGet(payload, "type"));
   msg.kind = FokhaJsonUnquote(FokhaJsonGet(payload, "kind"));
   msg.sender = FokhaJsonUnquote(FokhaJsonGet(payload, "sender"));
   msg.body = FokhaJsonGet(payload, "body");
   msg.in_reply_to = FokhaJsonUnquote(FokhaJsonGet(payload, "in_reply_to"));
   msg.status = FokhaJsonUnquote(FokhaJsonGet(payload, "status"));
   msg.details = FokhaJsonGet(payload, "details");
   if((msg.type != "message" && msg.type != "request" && msg.type != "reply") || msg.kind == "" ||
      StringGetCharacter(msg.body, 0) != '{')
     {
      ToBad("cur", name, "bad_message");
      return;
     }
   if(msg.sender != nsender)
     {
      ToBad("cur", name, "name_mismatch");
      return;
     }
   string state;
   bool known = m_state.TryGetValue(id, state);
   if(known && state == "D")
     {
      // a duplicate (resend, or crash before the ack): answer again with the stored reply
      string rid, reply;
      if(m_reply_id.TryGetValue(id, rid) && rid != "-" && m_reply.TryGetValue(id, reply))
         SendReply(rid, reply);
      FileDelete(Path(m_in, "cur", name), m_common);
      return;
     }
   msg.redelivered = known;   // "B" without "D": in doubt
   if(!known)
     {
      AppendJournal("B " + IntegerToString((long)TimeGMT()) + " " + id);
      m_state.Add(id, "B");
     }
   string status = "failed", details = "{}";
   OnMessage(msg, status, details);
   string rid = "-", reply = "-";
   if(msg.type == "request")
     {
      rid = "R" + StringSubstr(id, 0, 63);
      reply = "{\"body\":{},\"details\":" + details + ",\"in_reply_to\":" + FokhaJsonQuote(id) +
              ",\"kind\":" + FokhaJsonQuote(msg.kind) + ",\"sender\":" + FokhaJsonQuote(m_local) +
              ",\"sent_at\":" + IntegerToString((long)TimeGMT()) + ",\"status\":" +
              FokhaJsonQuote(status) + ",\"type\":\"reply\"}";
     }
   uchar covered[];
   int cn = FokhaUtf8(id + " " + rid + " " + reply, covered);
   string crc = StringFormat("%08x", FokhaCrcUpdate(0, covered, 0, cn));
   AppendJournal("D " + IntegerToString((long)TimeGMT()) + " " + id + " " + rid + " " + crc + " " + reply);
   m_state.TrySetValue(id, "D");
   FokhaPut(m_reply_id, id, rid);
   FokhaPut(m_reply, id, reply);
   if(rid != "-")
      SendReply(rid, reply);
   FileDelete(Path(m_in, "cur", name), m_common);   // acknowledge
  }

void CFokhaBridge::SendReply(const string reply_id, const string payload)
  {
   long seq = NextSeq();
   string name = IntegerToString(seq, 20, '0') + "-" + m_local + "-" + reply_id + ".fkb";
   uchar frame[];
   BuildFrame(reply_id, seq, payload, frame);
   Publish(m_out + "\\new", name, frame);
  }

bool CFokhaBridge::SendMessage(const string kind, const string body_json, string id)
  {
   if(id == "")
      id = "ea" + IntegerToString(GetMicrosecondCount()) + IntegerToString(MathRand());
   long seq = NextSeq();
   string payload = "{\"body\":" + body_json + ",\"kind\":" + FokhaJsonQuote(kind) + ",\"sender\":" +
                    FokhaJsonQuote(m_local) + ",\"sent_at\":" + IntegerToString((long)TimeGMT()) +
                    ",\"type\":\"message\"}";
   uchar frame[];
   BuildFrame(id, seq, payload, frame);
   return Publish(m_out + "\\new", IntegerToString(seq, 20, '0') + "-" + m_local + "-" + id + ".fkb", frame);
  }

//--- section 7: write tmp\<name>.<seq>.<sender>.snap, move to snap\<name>.<seq>.fkb, keep two
bool CFokhaBridge::WriteSnapshot(const string name, const string body_json)
  {
   long seq = NextSeq();
   string s20 = IntegerToString(seq, 20, '0');
   string payload = "{\"body\":" + body_json + ",\"kind\":" + FokhaJsonQuote(name) + ",\"sender\":" +
                    FokhaJsonQuote(m_local) + ",\"sent_at\":" + IntegerToString((long)TimeGMT()) +
                    ",\"type\":\"snapshot\"}";
   uchar frame[];
   BuildFrame(name + "-" + IntegerToString(seq), seq, payload, frame);
   string tmp = Path(m_out, "tmp", name + "." + s20 + "." + m_local + ".snap");
   if(!WriteBytes(tmp, frame))
      return false;
   if(!FileMove(tmp, m_common, Path(m_out, "snap", name + "." + s20 + ".fkb"), FILE_REWRITE | m_common))
      return false;
   string versions[];
   string found;
   long h = FileFindFirst(m_out + "\\snap\\" + name + ".*.fkb", found, m_common);
   if(h != INVALID_HANDLE)
     {
      do
        {
         if(StringLen(found) == StringLen(name) + 1 + 20 + 4 && StringFind(found, name + ".") == 0 &&
            StringSubstr(found, StringLen(found) - 4) == ".fkb")
           {
            int n = ArraySize(versions);
            ArrayResize(versions, n + 1);
            versions[n] = found;
           }
        }
      while(FileFindNext(h, found));
      FileFindClose(h);
     }
   FokhaSortStrings(versions);
   for(int i = 0; i < ArraySize(versions) - 2; i++)
      FileDelete(Path(m_out, "snap", versions[i]), m_common);
   return true;
  }

//--- section 4.2: bad\<name> and bad\<name>.reason.json, one log line
void CFokhaBridge::ToBad(const string sub, const string name, const string code)
  {
   FileMove(Path(m_in, sub, name), m_common, Path(m_in, "bad", name), FILE_REWRITE | m_common);
   uchar data[];
   FokhaUtf8("{\"at\":" + IntegerToString((long)TimeGMT()) + ",\"code\":" + FokhaJsonQuote(code) +
             ",\"detail\":\"\",\"reader\":" + FokhaJsonQuote(m_local) + "}", data);
   WriteBytes(Path(m_in, "bad", name + ".reason.json"), data);
   PrintFormat("fokha: moved %s to bad (%s)", name, code);
  }
//+------------------------------------------------------------------+
