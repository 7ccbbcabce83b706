//+------------------------------------------------------------------+
//| FokhaBridge.mqh                                                  |
//| The EA side of the fokha-integration file bridge, protocol v1.   |
//|                                                                  |
//| The contract is docs/protocols/file-bridge.md (section numbers   |
//| in the comments below refer to it). This file implements exactly |
//| that: find, read, check, claim, journal, handle, reply, ack,     |
//| heartbeat, snapshots.                                            |
//|                                                                  |
//| NOTE: no MQL5 compiler was available where this file was written |
//| and tested. tests/bridge/mql5_check.py checks its structure (API |
//| names against the reference, share flags, checked journal        |
//| appends, no Sleep, no StringCompare); the protocol is checked by |
//| an EA emulator written from the same spec. Compile it in         |
//| MetaEditor (F7) before use and report any compiler message.      |
//|                                                                  |
//| Usage: derive from CFokhaBridge, override OnMessage(), call      |
//| Init() in OnInit, OnTimer() from the EA's OnTimer. See           |
//| FokhaBridgeExample.mq5.                                          |
//+------------------------------------------------------------------+
#property strict

#include <Generic\HashMap.mqh>

#define FOKHA_VERSION          "1"
#define FOKHA_MAX_FRAME        1048576     // bytes, same default as the Python side
#define FOKHA_MAX_HEADER       128
#define FOKHA_CHECK_OK         0
#define FOKHA_CHECK_INCOMPLETE 1
#define FOKHA_CHECK_CORRUPT    2
#define FOKHA_CHECK_LOCKED     3           // could not be opened now (in use, vanished)
#define FOKHA_JSON_MAX_DEPTH   256         // spec 5: every implementation accepts 256 levels
#define FOKHA_JOURNAL_KEEP     100000      // ids kept when the journal is compacted
#define FOKHA_JOURNAL_AGE      604800      // seconds (7 days): older ids are dropped at compaction
#define FOKHA_SEQ_RESERVE      10000000    // seq values (10 s) reserved per journal S record
#define FOKHA_SHARE            (FILE_SHARE_READ | FILE_SHARE_WRITE)
#define FOKHA_PENDING_MAX      1000        // queued moves kept in memory (the rest: start-up recovery)

//--- one incoming message (spec section 5)
struct FokhaMessage
  {
   string            name;          // file name in cur/
   string            id;
   string            seq;           // decimal digits: 20-digit seqs do not fit a long
   string            type;          // message | request | reply
   string            kind;
   string            sender;
   double            sent_at;
   string            body;          // JSON object text
   string            in_reply_to;   // replies only
   string            status;        // replies only
   string            details;       // replies only, JSON object text ("{}" when absent)
   bool              redelivered;   // a previous run began it and did not finish (6.2 step 4)
  };

//+------------------------------------------------------------------+
//| CRC-32 (IEEE, as zlib): table driven                             |
//+------------------------------------------------------------------+
uint g_fokha_crc_table[256];
bool g_fokha_crc_ready = false;
bool g_fokha_seeded = false;

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

string FokhaCrcHex(const string text)
  {
   uchar data[];
   int n = FokhaUtf8(text, data);
   return StringFormat("%08x", FokhaCrcUpdate(0, data, 0, n));
  }

bool FokhaIsDigit(const ushort c)   { return c >= '0' && c <= '9'; }
bool FokhaIsIdChar(const ushort c)
  {
   return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == '-';
  }

// [A-Za-z0-9_-]{1,max}, plus '.' when dot is true (message kinds)
bool FokhaValidToken(const string s, const int max_len, const bool dash, const bool dot)
  {
   int n = StringLen(s);
   if(n < 1 || n > max_len)
      return false;
   for(int i = 0; i < n; i++)
     {
      ushort c = StringGetCharacter(s, i);
      if(c == '-' && !dash)
         return false;
      if(!(FokhaIsIdChar(c) || (dot && c == '.')))
         return false;
     }
   return true;
  }

string FokhaLower(const string s)
  {
   string out = s;
   StringToLower(out);
   return out;
  }

bool FokhaValidId(const string id)         { return FokhaValidToken(id, 64, true, false); }
bool FokhaValidSender(const string s)      { return FokhaValidToken(s, 32, false, false); }
bool FokhaValidKind(const string s)        { return FokhaValidToken(s, 64, true, true); }

// a decimal seq without its leading zeros ("0" for zero): seqs are compared as text
string FokhaSeqNorm(const string digits)
  {
   int n = StringLen(digits);
   int i = 0;
   while(i < n - 1 && StringGetCharacter(digits, i) == '0')
      i++;
   return StringSubstr(digits, i);
  }

// Full-name check after FileFindFirst/Next: the mask also matches 8.3 short names (section 3)
bool FokhaParseName(const string name, string &seq, string &sender, string &id)
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
   if(dash < 22)
      return false;
   sender = StringSubstr(name, 21, dash - 21);
   if(!FokhaValidSender(sender))
      return false;
   id = StringSubstr(name, dash + 1, n - 4 - dash - 1);
   if(!FokhaValidId(id))
      return false;
   seq = StringSubstr(name, 0, 20);
   return true;
  }

// Byte order of ASCII names (spec 6.2 step 2). StringCompare is locale order: not used.
bool FokhaLess(const string a, const string b)
  {
   int na = StringLen(a), nb = StringLen(b);
   int n = (na < nb) ? na : nb;
   for(int i = 0; i < n; i++)
     {
      ushort ca = StringGetCharacter(a, i), cb = StringGetCharacter(b, i);
      if(ca != cb)
         return ca < cb;
     }
   return na < nb;
  }

// Bottom-up merge sort, O(n log n) (ArraySort sorts numbers only)
void FokhaSortStrings(string &a[])
  {
   int n = ArraySize(a);
   if(n < 2)
      return;
   string tmp[];
   ArrayResize(tmp, n);
   for(int width = 1; width < n; width *= 2)
     {
      for(int lo = 0; lo < n; lo += 2 * width)
        {
         int mid = (lo + width < n) ? lo + width : n;
         int hi = (lo + 2 * width < n) ? lo + 2 * width : n;
         int i = lo, j = mid, k = lo;
         while(i < mid && j < hi)
           {
            if(FokhaLess(a[j], a[i]))
               tmp[k++] = a[j++];
            else
               tmp[k++] = a[i++];
           }
         while(i < mid)
            tmp[k++] = a[i++];
         while(j < hi)
            tmp[k++] = a[j++];
        }
      for(int c = 0; c < n; c++)
         a[c] = tmp[c];
     }
  }

// binary search in a list sorted by FokhaLess
bool FokhaSortedHas(const string &a[], const string key)
  {
   int lo = 0, hi = ArraySize(a) - 1;
   while(lo <= hi)
     {
      int mid = (lo + hi) / 2;
      if(a[mid] == key)
         return true;
      if(FokhaLess(a[mid], key))
         lo = mid + 1;
      else
         hi = mid - 1;
     }
   return false;
  }

//+------------------------------------------------------------------+
//| UTF-8 and JSON, on bytes, by recursive descent (spec 4.1 and 5). |
//| The grammar is RFC 8259 as Python's json.loads accepts it: no    |
//| NaN/Infinity, no trailing commas, no comments, strict UTF-8.     |
//+------------------------------------------------------------------+
bool FokhaUtf8Valid(const uchar &b[], const int start, const int end)
  {
   int i = start;
   while(i < end)
     {
      uint c = b[i];
      if(c < 0x80)
        {
         i++;
         continue;
        }
      int need = 0;
      uint cp = 0, lowest = 0;
      if(c >= 0xC2 && c <= 0xDF)
        { need = 1; cp = c & 0x1F; lowest = 0x80; }
      else
         if(c >= 0xE0 && c <= 0xEF)
           { need = 2; cp = c & 0x0F; lowest = 0x800; }
         else
            if(c >= 0xF0 && c <= 0xF4)
              { need = 3; cp = c & 0x07; lowest = 0x10000; }
            else
               return false;
      if(i + need >= end)
         return false;
      for(int k = 1; k <= need; k++)
        {
         uint d = b[i + k];
         if((d & 0xC0) != 0x80)
            return false;
         cp = (cp << 6) | (d & 0x3F);
        }
      if(cp < lowest || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
         return false;
      i += need + 1;
     }
   return true;
  }

int FokhaJsonWs(const uchar &b[], int i, const int end)
  {
   while(i < end && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r'))
      i++;
   return i;
  }

bool FokhaIsHex(const uchar c)
  {
   return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  }

// index after the string starting at b[i] == '"', or -1
int FokhaJsonString(const uchar &b[], const int i, const int end)
  {
   int j = i + 1;
   while(j < end)
     {
      uchar c = b[j];
      if(c == '"')
         return j + 1;
      if(c < 0x20)
         return -1;
      if(c != '\\')
        {
         j++;
         continue;
        }
      if(j + 1 >= end)
         return -1;
      uchar e = b[j + 1];
      if(e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't')
         j += 2;
      else
         if(e == 'u')
           {
            if(j + 5 >= end)
               return -1;
            for(int k = 2; k <= 5; k++)
               if(!FokhaIsHex(b[j + k]))
                  return -1;
            j += 6;
           }
         else
            return -1;
     }
   return -1;
  }

int FokhaJsonDigits(const uchar &b[], int j, const int end)
  {
   int start = j;
   while(j < end && b[j] >= '0' && b[j] <= '9')
      j++;
   return (j > start) ? j : -1;
  }

// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
int FokhaJsonNumber(const uchar &b[], const int i, const int end)
  {
   int j = i;
   if(j < end && b[j] == '-')
      j++;
   if(j >= end)
      return -1;
   if(b[j] == '0')
      j++;
   else
      if(b[j] >= '1' && b[j] <= '9')
         j = FokhaJsonDigits(b, j, end);
      else
         return -1;
   if(j < end && b[j] == '.')
     {
      j = FokhaJsonDigits(b, j + 1, end);
      if(j < 0)
         return -1;
     }
   if(j < end && (b[j] == 'e' || b[j] == 'E'))
     {
      j++;
      if(j < end && (b[j] == '+' || b[j] == '-'))
         j++;
      j = FokhaJsonDigits(b, j, end);
     }
   return j;
  }

int FokhaJsonLiteral(const uchar &b[], const int i, const int end, const string word)
  {
   int n = StringLen(word);
   if(i + n > end)
      return -1;
   for(int k = 0; k < n; k++)
      if(b[i + k] != (uchar)StringGetCharacter(word, k))
         return -1;
   return i + n;
  }

int FokhaJsonValue(const uchar &b[], const int i, const int end, const int depth);

int FokhaJsonArray(const uchar &b[], const int i, const int end, const int depth)
  {
   int j = FokhaJsonWs(b, i + 1, end);
   if(j < end && b[j] == ']')
      return j + 1;
   while(j < end)
     {
      j = FokhaJsonValue(b, j, end, depth);
      if(j < 0)
         return -1;
      j = FokhaJsonWs(b, j, end);
      if(j >= end)
         return -1;
      if(b[j] == ']')
         return j + 1;
      if(b[j] != ',')
         return -1;
      j = FokhaJsonWs(b, j + 1, end);
     }
   return -1;
  }

int FokhaJsonObjectEnd(const uchar &b[], const int i, const int end, const int depth)
  {
   int j = FokhaJsonWs(b, i + 1, end);
   if(j < end && b[j] == '}')
      return j + 1;
   while(j < end)
     {
      if(b[j] != '"')
         return -1;
      j = FokhaJsonString(b, j, end);
      if(j < 0)
         return -1;
      j = FokhaJsonWs(b, j, end);
      if(j >= end || b[j] != ':')
         return -1;
      j = FokhaJsonValue(b, FokhaJsonWs(b, j + 1, end), end, depth);
      if(j < 0)
         return -1;
      j = FokhaJsonWs(b, j, end);
      if(j >= end)
         return -1;
      if(b[j] == '}')
         return j + 1;
      if(b[j] != ',')
         return -1;
      j = FokhaJsonWs(b, j + 1, end);
     }
   return -1;
  }

// index just after the JSON value starting at b[i], or -1 (depth: containers around it;
// a container value is one level deeper, at most FOKHA_JSON_MAX_DEPTH)
int FokhaJsonValue(const uchar &b[], const int i, const int end, const int depth)
  {
   if(i >= end)
      return -1;
   uchar c = b[i];
   if(c == '{')
      return (depth + 1 > FOKHA_JSON_MAX_DEPTH) ? -1 : FokhaJsonObjectEnd(b, i, end, depth + 1);
   if(c == '[')
      return (depth + 1 > FOKHA_JSON_MAX_DEPTH) ? -1 : FokhaJsonArray(b, i, end, depth + 1);
   if(c == '"')
      return FokhaJsonString(b, i, end);
   if(c == 't')
      return FokhaJsonLiteral(b, i, end, "true");
   if(c == 'f')
      return FokhaJsonLiteral(b, i, end, "false");
   if(c == 'n')
      return FokhaJsonLiteral(b, i, end, "null");
   return FokhaJsonNumber(b, i, end);
  }

int FokhaHexValue(const uchar c)
  {
   if(c >= '0' && c <= '9')
      return c - '0';
   if(c >= 'a' && c <= 'f')
      return c - 'a' + 10;
   return c - 'A' + 10;
  }

void FokhaPutUtf8(uchar &out[], int &n, uint cp)
  {
   if(cp == 0)
      cp = 0xFFFD;   // a NUL would end CharArrayToString early: never equal to a valid field
   ArrayResize(out, n + 4, 256);
   if(cp < 0x80)
      out[n++] = (uchar)cp;
   else
      if(cp < 0x800)
        {
         out[n++] = (uchar)(0xC0 | (cp >> 6));
         out[n++] = (uchar)(0x80 | (cp & 0x3F));
        }
      else
         if(cp < 0x10000)
           {
            out[n++] = (uchar)(0xE0 | (cp >> 12));
            out[n++] = (uchar)(0x80 | ((cp >> 6) & 0x3F));
            out[n++] = (uchar)(0x80 | (cp & 0x3F));
           }
         else
           {
            out[n++] = (uchar)(0xF0 | (cp >> 18));
            out[n++] = (uchar)(0x80 | ((cp >> 12) & 0x3F));
            out[n++] = (uchar)(0x80 | ((cp >> 6) & 0x3F));
            out[n++] = (uchar)(0x80 | (cp & 0x3F));
           }
  }

uint FokhaHex4At(const uchar &b[], const int j)
  {
   return (uint)((FokhaHexValue(b[j]) << 12) | (FokhaHexValue(b[j + 1]) << 8) |
                 (FokhaHexValue(b[j + 2]) << 4) | FokhaHexValue(b[j + 3]));
  }

// the text of a checked JSON string b[i..end) (b[i] == '"'), escapes decoded
string FokhaJsonDecodeString(const uchar &b[], const int i, const int end)
  {
   uchar out[];
   int n = 0;
   int j = i + 1;
   while(j < end - 1)
     {
      uchar c = b[j];
      if(c != '\\')
        {
         ArrayResize(out, n + 1, 256);
         out[n++] = c;
         j++;
         continue;
        }
      uchar e = b[j + 1];
      j += 2;
      uint cp = e;
      if(e == 'b')
         cp = 8;
      else
         if(e == 'f')
            cp = 12;
         else
            if(e == 'n')
               cp = 10;
            else
               if(e == 'r')
                  cp = 13;
               else
                  if(e == 't')
                     cp = 9;
                  else
                     if(e == 'u')
                       {
                        cp = FokhaHex4At(b, j);
                        j += 4;
                        if(cp >= 0xD800 && cp <= 0xDBFF && j + 5 < end && b[j] == '\\' && b[j + 1] == 'u')
                          {
                           uint lo = FokhaHex4At(b, j + 2);
                           if(lo >= 0xDC00 && lo <= 0xDFFF)
                             {
                              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                              j += 6;
                             }
                          }
                        if(cp >= 0xD800 && cp <= 0xDFFF)
                           cp = 0xFFFD;   // a lone surrogate has no UTF-8 form
                       }
      FokhaPutUtf8(out, n, cp);
     }
   if(n == 0)
      return "";
   return CharArrayToString(out, 0, n, CP_UTF8);
  }

//+------------------------------------------------------------------+
//| One checked JSON object and the spans of its top-level members.  |
//| Values are found by the same parser that checked the text, so no |
//| string inside a payload can confuse field extraction.            |
//+------------------------------------------------------------------+
class CFokhaJsonObject
  {
private:
   uchar             m_b[];
   string            m_keys[];
   int               m_vs[];
   int               m_ve[];
   int               m_n;

public:
                     CFokhaJsonObject(void) : m_n(0) {}
   //--- checks b[start..end) is one JSON object (whitespace around allowed); false otherwise
   bool              Parse(const uchar &b[], const int start, const int end);
   bool              ParseText(const string text);
   int               Count(void) const { return m_n; }
   bool              Has(const string key) const { return Find(key) >= 0; }
   int               Find(const string key) const;
   string            Raw(const string key) const;
   bool              GetString(const string key, string &out) const;
   bool              GetNumber(const string key, double &out) const;
   bool              GetObject(const string key, string &out) const;
  };

bool CFokhaJsonObject::Parse(const uchar &b[], const int start, const int end)
  {
   m_n = 0;
   ArrayResize(m_keys, 0);
   ArrayResize(m_vs, 0);
   ArrayResize(m_ve, 0);
   ArrayResize(m_b, 0);
   if(end - start > 0)
      ArrayCopy(m_b, b, 0, start, end - start);
   int size = end - start;
   int i = FokhaJsonWs(m_b, 0, size);
   if(i >= size || m_b[i] != '{')
      return false;
   // the whole object first (depth, grammar), then its members
   int close = FokhaJsonObjectEnd(m_b, i, size, 1);
   if(close < 0 || FokhaJsonWs(m_b, close, size) != size)
      return false;
   int j = FokhaJsonWs(m_b, i + 1, size);
   while(j < close - 1)
     {
      int kend = FokhaJsonString(m_b, j, size);
      string key = FokhaJsonDecodeString(m_b, j, kend);
      j = FokhaJsonWs(m_b, kend, size);           // at ':'
      int vs = FokhaJsonWs(m_b, j + 1, size);
      int ve = FokhaJsonValue(m_b, vs, size, 1);
      ArrayResize(m_keys, m_n + 1, 16);
      ArrayResize(m_vs, m_n + 1, 16);
      ArrayResize(m_ve, m_n + 1, 16);
      m_keys[m_n] = key;
      m_vs[m_n] = vs;
      m_ve[m_n] = ve;
      m_n++;
      j = FokhaJsonWs(m_b, ve, size);             // at ',' or '}'
      j = FokhaJsonWs(m_b, j + 1, size);
     }
   return true;
  }

bool CFokhaJsonObject::ParseText(const string text)
  {
   uchar b[];
   int n = FokhaUtf8(text, b);
   return FokhaUtf8Valid(b, 0, n) && Parse(b, 0, n);
  }

// duplicate keys: the last one wins, as in Python's json.loads
int CFokhaJsonObject::Find(const string key) const
  {
   for(int k = m_n - 1; k >= 0; k--)
      if(m_keys[k] == key)
         return k;
   return -1;
  }

string CFokhaJsonObject::Raw(const string key) const
  {
   int k = Find(key);
   if(k < 0)
      return "";
   return CharArrayToString(m_b, m_vs[k], m_ve[k] - m_vs[k], CP_UTF8);
  }

bool CFokhaJsonObject::GetString(const string key, string &out) const
  {
   int k = Find(key);
   if(k < 0 || m_b[m_vs[k]] != '"')
      return false;
   out = FokhaJsonDecodeString(m_b, m_vs[k], m_ve[k]);
   return true;
  }

bool CFokhaJsonObject::GetNumber(const string key, double &out) const
  {
   int k = Find(key);
   if(k < 0)
      return false;
   uchar c = m_b[m_vs[k]];
   if(c != '-' && (c < '0' || c > '9'))
      return false;   // true/false are not numbers here (as the Python side)
   out = StringToDouble(CharArrayToString(m_b, m_vs[k], m_ve[k] - m_vs[k], CP_UTF8));
   return true;
  }

bool CFokhaJsonObject::GetObject(const string key, string &out) const
  {
   int k = Find(key);
   if(k < 0 || m_b[m_vs[k]] != '{')
      return false;
   out = CharArrayToString(m_b, m_vs[k], m_ve[k] - m_vs[k], CP_UTF8);
   return true;
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

// a text the handler gave: a JSON object, or "{}" when it is not one
bool FokhaIsJsonObject(const string text)
  {
   CFokhaJsonObject o;
   return o.ParseText(text);
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

// split off the first n space-separated fields of line; rest gets what follows
bool FokhaFields(const string line, const int n, string &fields[], string &rest)
  {
   ArrayResize(fields, n);
   int pos = 0;
   for(int k = 0; k < n; k++)
     {
      int sp = StringFind(line, " ", pos);
      if(sp < 0)
        {
         if(k != n - 1)
            return false;
         fields[k] = StringSubstr(line, pos);
         rest = "";
         return StringLen(fields[k]) > 0;
        }
      fields[k] = StringSubstr(line, pos, sp - pos);
      pos = sp + 1;
     }
   rest = StringSubstr(line, pos);
   return true;
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
   long              m_reserved;    // seqs below this are covered by a journal S record
   uint              m_grace_ms;
   ulong             m_last_beat;
   uint              m_beat_ms;
   ulong             m_init_tick;
   uint              m_ready_wait_ms;   // bounded wait for the trade server before taking messages
   uint              m_settle_ms;       // connected this long before cur/ is reconciled
   ulong             m_connected_since;
   ulong             m_ready_checked_at;
   bool              m_ready;
   bool              m_reconciled;      // cur/ reconciled with the trade server ready
   bool              m_wait_logged;
   bool              m_recheck_cur;     // something stayed in cur/: look again
   ulong             m_last_cur_check;
   bool              m_journal_lf;      // the journal ends in a torn line: start with LF
   int               m_journal_lines;
   CHashMap<string, string> m_state;      // id -> "B" | "D"
   CHashMap<string, string> m_reply_id;   // id -> reply id ("-" for none)
   CHashMap<string, string> m_reply;      // id -> reply payload ("-" for none)
   CHashMap<string, string> m_effect;     // id -> the handler's effect evidence (E records)
   CHashMap<string, long>   m_at;         // id -> unix seconds of its newest record
   CHashMap<string, string> m_claimed;    // order ticket -> id whose evidence names it
   CHashMap<string, long>   m_seen_size;  // not-ready file -> size when first seen
   CHashMap<string, long>   m_seen_mtime; // not-ready file -> modification time then
   CHashMap<string, long>   m_seen_at;    // not-ready file -> GetTickCount64() then
   CHashMap<string, string> m_seen_code;  // not-ready file -> why (the reason code if it goes to bad)
   long              m_last_compact;    // TimeGMT() of the last compaction (the age rule runs daily)
   string            m_pend_src[];      // moves that failed (file in use): retried each tick
   string            m_pend_dst[];

public:
                     CFokhaBridge(void) : m_common(0), m_last_seq(0), m_reserved(0), m_grace_ms(5000),
                     m_last_beat(0), m_beat_ms(1000), m_init_tick(0), m_ready_wait_ms(60000),
                     m_settle_ms(3000), m_connected_since(0), m_ready_checked_at(0), m_ready(false), m_reconciled(false),
                     m_wait_logged(false), m_recheck_cur(false), m_last_cur_check(0),
                     m_journal_lf(false), m_journal_lines(0), m_last_compact(0) {}

   //--- override: handle one message. For a request set status (executed, rejected,
   //--- failed, accepted) and details_json (a JSON object text) and return true.
   //--- Return false for a handler error: a request is answered "failed", a one-way
   //--- message goes to bad\ with reason handler_error.
   //--- msg.redelivered: a previous run began this id and may have acted already:
   //--- look at EffectOf(msg.id) and at the trade server before acting again.
   virtual bool      OnMessage(FokhaMessage &msg, string &status, string &details_json)
     {
      status = "rejected";
      details_json = "{\"message\":\"no handler\"}";
      return true;
     }
   //--- override when in-doubt messages need something else than the trade server
   virtual bool      TradeServerReady(void);

   bool              Init(const string root, const bool common = false,
                          const string local = "ea", const string peer = "py");
   void              OnTimer(void);
   bool              WriteSnapshot(const string name, const string body_json);
   bool              SendMessage(const string kind, const string body_json, string id = "");
   //--- durable effect evidence (a JSON object), written before acting and after
   bool              JournalEffect(const string id, const string evidence_json);
   bool              EffectOf(const string id, string &evidence_json);
   bool              TicketClaimed(const ulong ticket, const string by_id);
   string            NewTag(void);     // unique per EA across restarts: "fk" + seq
   string            Instance(void) const { return m_instance; }

protected:
   string            Path(const string dir, const string sub, const string name)
     { return dir + "\\" + sub + "\\" + name; }
   long              NextSeq(void);
   int               ReadFrame(const string path, uchar &buf[], long &size);
   int               CheckFrame(const uchar &buf[], const int size, string &id, string &seq,
                                CFokhaJsonObject &obj, string &code);
   bool              BuildFrame(const string id, const long seq, const string payload, uchar &out[]);
   bool              WriteBytes(const string path, const uchar &data[]);
   bool              Publish(const string name, const uchar &frame[]);
   void              RetryMoves(void);
   bool              AppendJournal(const string line);
   bool              LoadJournal(void);
   void              ApplyRecord(const string line);
   void              CompactJournal(const bool force);
   void              RecoverTmp(void);
   void              ReconcileCur(void);
   void              Poll(void);
   void              NotReady(const string name, const string path, const string code);
   void              Forget(const string name);
   bool              Process(const string name, const string id, const string seq, CFokhaJsonObject &obj);
   bool              SendReply(const string reply_id, const string payload);
   bool              ToBad(const string sub, const string name, const string code, const string detail);
   int               List(const string folder, string &names[]);
   void              NoteOwnSeq(const string digits);
  };

//--- create folders, load the journal, recover tmp\ (sections 6.1 step 4 and 6.3).
//--- cur\ is reconciled later, from OnTimer, once the trade server is ready (6.2 step 1).
bool CFokhaBridge::Init(const string root, const bool common, const string local, const string peer)
  {
   m_root = root;
   m_common = common ? FILE_COMMON : 0;
   m_local = local;
   m_peer = peer;
   m_in = root + "\\" + peer + "2" + local;
   m_out = root + "\\" + local + "2" + peer;
   m_journal = root + "\\state\\" + local + ".journal";
   if(!g_fokha_seeded)
     {
      // once per program: GetTickCount counts from OS start, GetMicrosecondCount from
      // program start, TimeLocal is the wall clock; together they differ at every start
      MathSrand((int)(GetTickCount() ^ (uint)GetMicrosecondCount() ^ (uint)TimeLocal()));
      g_fokha_seeded = true;
     }
   m_instance = IntegerToString((long)TimeGMT()) + "-" + IntegerToString((long)(GetMicrosecondCount() % 1000000)) +
                StringFormat("-%04x%04x%04x%04x", MathRand(), MathRand(), MathRand(), MathRand());
   string subs[6] = {"tmp", "new", "cur", "bad", "done", "snap"};
   for(int i = 0; i < 6; i++)
     {
      FolderCreate(m_in + "\\" + subs[i], m_common);
      FolderCreate(m_out + "\\" + subs[i], m_common);
     }
   FolderCreate(root + "\\state", m_common);
   if(!LoadJournal())
     {
      PrintFormat("fokha: cannot read %s (error %d): not starting, every id would look new",
                  m_journal, GetLastError());
      return false;
     }
   RecoverTmp();
   m_init_tick = GetTickCount64();
   PrintFormat("fokha: bridge %s started (instance %s); cur\\ is reconciled once the trade server is ready",
               m_root, m_instance);
   return true;
  }

//--- connected, logged in, history selectable, and all of it for m_settle_ms
bool CFokhaBridge::TradeServerReady(void)
  {
   ulong now = GetTickCount64();
   if(now - m_ready_checked_at < 500)
      return m_ready;   // asked every tick while waiting: look at most twice a second
   m_ready_checked_at = now;
   // the last week of history is what a redelivered order is looked up in
   bool up = TerminalInfoInteger(TERMINAL_CONNECTED) != 0 && AccountInfoInteger(ACCOUNT_LOGIN) != 0 &&
             HistorySelect(TimeCurrent() - 7 * 86400, TimeCurrent() + 86400);
   if(!up)
      m_connected_since = 0;
   else
      if(m_connected_since == 0)
         m_connected_since = now;
   m_ready = up && now - m_connected_since >= m_settle_ms;
   return m_ready;
  }

//--- call from the EA's OnTimer (EventSetMillisecondTimer(20) or so: the floor is ~10-16 ms).
//--- Nothing in here waits: a move that fails is queued and retried on the next tick.
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
   RetryMoves();
   if(!m_reconciled)
     {
      if(TradeServerReady())
        {
         m_reconciled = true;
         PrintFormat("fokha: trade server ready after %I64u ms: reconciling cur\\", now - m_init_tick);
         ReconcileCur();
        }
      else
        {
         if(now - m_init_tick < m_ready_wait_ms)
            return;   // bounded wait: nothing is taken before the trade server is known
         if(!m_wait_logged)
           {
            PrintFormat("fokha: trade server not ready after %u ms: taking new messages; in-doubt ids stay in cur\\ until it is",
                        m_ready_wait_ms);
            m_wait_logged = true;
           }
         m_recheck_cur = true;
        }
     }
   if(m_recheck_cur && now - m_last_cur_check >= 1000)
     {
      m_last_cur_check = now;
      m_recheck_cur = false;
      ReconcileCur();
     }
   Poll();
   // retention (6.3): by count as records accumulate, by age once a day
   CompactJournal((long)TimeGMT() - m_last_compact >= 86400);
  }

//--- section 3: max(last + 1, unix microseconds, own files found at start); a journal S
//--- record reserves the next 10 s of seqs, so a restart within them starts above them
long CFokhaBridge::NextSeq(void)
  {
   // TimeGMT() has whole seconds; the microsecond counter (from program start) spreads
   // seqs inside the second. It may run up to 1 s ahead of the clock: harmless.
   long t = (long)TimeGMT() * 1000000 + (long)(GetMicrosecondCount() % 1000000);
   m_last_seq = (m_last_seq + 1 > t) ? m_last_seq + 1 : t;
   if(m_last_seq >= m_reserved)
     {
      long want = m_last_seq + FOKHA_SEQ_RESERVE;
      if(AppendJournal("S " + IntegerToString((long)TimeGMT()) + " " + IntegerToString(want)))
         m_reserved = want;
      else
         PrintFormat("fokha: cannot reserve seqs in %s (error %d)", m_journal, GetLastError());
     }
   return m_last_seq;
  }

void CFokhaBridge::NoteOwnSeq(const string digits)
  {
   long v = StringToInteger(FokhaSeqNorm(digits));   // own seqs are unix microseconds: fit a long
   if(StringLen(FokhaSeqNorm(digits)) <= 18 && v > m_last_seq)
      m_last_seq = v;
  }

string CFokhaBridge::NewTag(void)
  {
   return "fk" + IntegerToString(NextSeq());
  }

//--- open shared, check the size before reading (section 4: too_large is refused unread)
int CFokhaBridge::ReadFrame(const string path, uchar &buf[], long &size)
  {
   ResetLastError();
   int h = FileOpen(path, FILE_READ | FILE_BIN | FOKHA_SHARE | m_common);
   if(h == INVALID_HANDLE)
      return FOKHA_CHECK_LOCKED;
   size = (long)FileSize(h);
   if(size > FOKHA_MAX_FRAME)
     {
      FileClose(h);
      return FOKHA_CHECK_CORRUPT;
     }
   ArrayResize(buf, (int)size);
   uint got = (size > 0) ? FileReadArray(h, buf, 0, (int)size) : 0;
   FileClose(h);
   if((long)got != size)
      return FOKHA_CHECK_LOCKED;
   return FOKHA_CHECK_OK;
  }

//--- section 4.1, in its order; returns FOKHA_CHECK_OK / _INCOMPLETE / _CORRUPT
int CFokhaBridge::CheckFrame(const uchar &buf[], const int size, string &id, string &seq,
                             CFokhaJsonObject &obj, string &code)
  {
   if(size > FOKHA_MAX_FRAME)
     { code = "too_large"; return FOKHA_CHECK_CORRUPT; }
   int lf = -1;
   for(int i = 0; i < size && i < FOKHA_MAX_HEADER; i++)
      if(buf[i] == '\n')
        { lf = i; break; }
   if(lf < 0)
     {
      // before the LF only the magic is checked (4.1 step 1)
      string magic = "FOKHA ";
      for(int i = 0; i < size && i < 6; i++)
         if(buf[i] != (uchar)StringGetCharacter(magic, i))
           { code = "bad_magic"; return FOKHA_CHECK_CORRUPT; }
      if(size >= FOKHA_MAX_HEADER)
        { code = "bad_header"; return FOKHA_CHECK_CORRUPT; }
      code = "incomplete";
      return FOKHA_CHECK_INCOMPLETE;
     }
   // the header as text, byte for byte; a byte outside printable ASCII becomes 0x01, which
   // no valid field contains, so every verdict below is the one the bytes would get
   string header = "";
   for(int i = 0; i < lf; i++)
      header += ShortToString((buf[i] >= 0x20 && buf[i] <= 0x7E) ? (ushort)buf[i] : (ushort)1);
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
   long length = StringToInteger(f[4]);   // at most 10 digits: fits a long
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
   int p = lf + 1;
   if(length >= 3 && buf[p] == 0xEF && buf[p + 1] == 0xBB && buf[p + 2] == 0xBF)
     { code = "bad_utf8"; return FOKHA_CHECK_CORRUPT; }   // a byte order mark (4, point 2)
   if(!FokhaUtf8Valid(buf, p, e))
     { code = "bad_utf8"; return FOKHA_CHECK_CORRUPT; }
   if(!obj.Parse(buf, p, e))
     { code = "bad_json"; return FOKHA_CHECK_CORRUPT; }
   id = f[2];
   seq = f[3];
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
   if(blen > 0)
      ArrayCopy(out, body, plen + clen, 0, blen);
   ArrayCopy(out, tail, plen + clen + blen, 0, 5);
   return blen + plen + clen + 5 <= FOKHA_MAX_FRAME;
  }

//--- FileOpen..FileWriteArray..FileFlush..FileClose: MQL5 buffers until flush/close.
//--- Only for files of our own in tmp\ and bad\ (nobody else opens them while we write).
bool CFokhaBridge::WriteBytes(const string path, const uchar &data[])
  {
   int h = FileOpen(path, FILE_WRITE | FILE_BIN | FILE_SHARE_READ | m_common);
   if(h == INVALID_HANDLE)
      return false;
   uint n = FileWriteArray(h, data, 0, ArraySize(data));
   FileFlush(h);
   FileClose(h);
   return n == (uint)ArraySize(data);
  }

//--- section 6.1: write into tmp\, then move into new\. A move that fails (the reader
//--- has the file open) is queued for the next tick; nothing here waits.
bool CFokhaBridge::Publish(const string name, const uchar &frame[])
  {
   string tmp = Path(m_out, "tmp", name);
   string dst = Path(m_out, "new", name);
   if(!WriteBytes(tmp, frame))
     {
      PrintFormat("fokha: cannot write %s (error %d)", tmp, GetLastError());
      FileDelete(tmp, m_common);
      return false;
     }
   if(FileMove(tmp, m_common, dst, m_common))
      return true;
   int n = ArraySize(m_pend_src);
   if(n < FOKHA_PENDING_MAX)
     {
      ArrayResize(m_pend_src, n + 1);
      ArrayResize(m_pend_dst, n + 1);
      m_pend_src[n] = tmp;
      m_pend_dst[n] = dst;
     }
   PrintFormat("fokha: %s not moved yet (error %d): retried on the next tick and at start-up",
               name, GetLastError());
   return true;
  }

//--- FILE_REWRITE: an interrupted non-atomic move may have left a partial copy of our own file
void CFokhaBridge::RetryMoves(void)
  {
   int n = ArraySize(m_pend_src);
   if(n == 0)
      return;
   int keep = 0;
   for(int i = 0; i < n; i++)
     {
      if(!FileIsExist(m_pend_src[i], m_common))
         continue;
      if(FileMove(m_pend_src[i], m_common, m_pend_dst[i], FILE_REWRITE | m_common))
         continue;
      m_pend_src[keep] = m_pend_src[i];
      m_pend_dst[keep] = m_pend_dst[i];
      keep++;
     }
   ArrayResize(m_pend_src, keep);
   ArrayResize(m_pend_dst, keep);
  }

//--- one record, shared open (doctor, an editor or a virus scanner may be reading the
//--- journal), checked write. false: the caller must not act on the record.
bool CFokhaBridge::AppendJournal(const string line)
  {
   ResetLastError();
   int h = FileOpen(m_journal, FILE_READ | FILE_WRITE | FILE_BIN | FOKHA_SHARE | m_common);
   if(h == INVALID_HANDLE)
      return false;
   if(!FileSeek(h, 0, SEEK_END))
     {
      FileClose(h);
      return false;
     }
   uchar data[];
   int n = FokhaUtf8((m_journal_lf ? "\n" : "") + line + "\n", data);
   uint written = FileWriteArray(h, data, 0, n);
   FileFlush(h);
   FileClose(h);
   if(written != (uint)n)
      return false;
   m_journal_lf = false;
   m_journal_lines++;
   return true;
  }

//--- section 6.3: B / D records (and this EA's E and S records); a torn last line (no LF)
//--- or a bad crc is ignored. false when the journal exists and cannot be read.
bool CFokhaBridge::LoadJournal(void)
  {
   if(!FileIsExist(m_journal, m_common))
      return true;
   int h = FileOpen(m_journal, FILE_READ | FILE_BIN | FOKHA_SHARE | m_common);
   if(h == INVALID_HANDLE)
      return false;
   long size = (long)FileSize(h);
   uchar raw[];
   ArrayResize(raw, (int)size);
   uint got = (size > 0) ? FileReadArray(h, raw, 0, (int)size) : 0;
   FileClose(h);
   if((long)got != size)
      return false;
   m_journal_lf = size > 0 && raw[size - 1] != '\n';
   int start = 0;
   for(int i = 0; i < size; i++)
     {
      if(raw[i] != '\n')
         continue;
      if(i > start)
         ApplyRecord(CharArrayToString(raw, start, i - start, CP_UTF8));
      m_journal_lines++;
      start = i + 1;
     }
   CompactJournal(true);
   return true;
  }

void CFokhaBridge::ApplyRecord(const string line)
  {
   string p[];
   string rest;
   ushort kind = StringGetCharacter(line, 0);
   if(kind == 'B' && FokhaFields(line, 3, p, rest) && rest == "" && FokhaValidId(p[2]))
     {
      if(!m_state.ContainsKey(p[2]))
         m_state.Add(p[2], "B");
      FokhaPut(m_at, p[2], StringToInteger(p[1]));
     }
   else
      if(kind == 'D' && FokhaFields(line, 5, p, rest) && rest != "" && FokhaValidId(p[2]))
        {
         if(FokhaCrcHex(p[2] + " " + p[3] + " " + rest) != p[4])
            return;
         FokhaPut(m_state, p[2], "D");
         FokhaPut(m_reply_id, p[2], p[3]);
         FokhaPut(m_reply, p[2], rest);
         FokhaPut(m_at, p[2], StringToInteger(p[1]));
        }
      else
         if(kind == 'E' && FokhaFields(line, 4, p, rest) && rest != "" && FokhaValidId(p[2]))
           {
            if(FokhaCrcHex(p[2] + " " + rest) != p[3])
               return;
            FokhaPut(m_effect, p[2], rest);
            FokhaPut(m_at, p[2], StringToInteger(p[1]));
            CFokhaJsonObject ev;
            double order = 0;
            if(ev.ParseText(rest) && ev.GetNumber("order", order) && order > 0)
               FokhaPut(m_claimed, IntegerToString((long)order), p[2]);
           }
         else
            if(kind == 'S' && FokhaFields(line, 3, p, rest) && rest == "")
              {
               long v = StringToInteger(p[2]);
               if(v > m_reserved)
                  m_reserved = v;
               if(v > m_last_seq)
                  m_last_seq = v;   // the previous run may have used every seq below it
              }
  }

//--- retention (6.3): ids newer than 7 days and among the newest 100,000; rewritten to
//--- tmp, flushed, moved over the journal (FILE_REWRITE). A failed move keeps the old file.
void CFokhaBridge::CompactJournal(const bool force)
  {
   int count = m_state.Count();
   if(!force && m_journal_lines <= 2 * count + 1000 && count <= FOKHA_JOURNAL_KEEP)
      return;
   m_last_compact = (long)TimeGMT();
   string ids[];
   long ats[];
   m_at.CopyTo(ids, ats);
   int n = ArraySize(ids);
   long cutoff = (long)TimeGMT() - FOKHA_JOURNAL_AGE;
   if(n > FOKHA_JOURNAL_KEEP)
     {
      long sorted[];
      ArrayCopy(sorted, ats);
      ArraySort(sorted);
      if(sorted[n - FOKHA_JOURNAL_KEEP] > cutoff)
         cutoff = sorted[n - FOKHA_JOURNAL_KEEP];
     }
   string tmp = m_root + "\\state\\" + m_local + ".journal.tmp";
   int h = FileOpen(tmp, FILE_WRITE | FILE_BIN | FILE_SHARE_READ | m_common);
   if(h == INVALID_HANDLE)
      return;
   bool ok = true;
   int lines = 0;
   string text = "S " + IntegerToString((long)TimeGMT()) + " " + IntegerToString(m_reserved) + "\n";
   lines++;
   for(int i = 0; i < n; i++)
     {
      string id = ids[i], state, evidence, rid, reply;
      if(ats[i] < cutoff)
        {
         CFokhaJsonObject old;
         double order = 0;
         if(m_effect.TryGetValue(id, evidence) && old.ParseText(evidence) && old.GetNumber("order", order))
            m_claimed.Remove(IntegerToString((long)order));
         m_state.Remove(id);
         m_reply_id.Remove(id);
         m_reply.Remove(id);
         m_effect.Remove(id);
         m_at.Remove(id);
         continue;
        }
      string at = IntegerToString(ats[i]);
      if(m_effect.TryGetValue(id, evidence))
        {
         text += "E " + at + " " + id + " " + FokhaCrcHex(id + " " + evidence) + " " + evidence + "\n";
         lines++;
        }
      if(m_state.TryGetValue(id, state) && state == "D" && m_reply_id.TryGetValue(id, rid) &&
         m_reply.TryGetValue(id, reply))
         text += "D " + at + " " + id + " " + rid + " " + FokhaCrcHex(id + " " + rid + " " + reply) + " " + reply + "\n";
      else
         text += "B " + at + " " + id + "\n";
      lines++;
      if(StringLen(text) > 65536 || i == n - 1)
        {
         uchar data[];
         int dn = FokhaUtf8(text, data);
         ok = ok && FileWriteArray(h, data, 0, dn) == (uint)dn;
         text = "";
        }
     }
   if(text != "")
     {
      uchar data[];
      int dn = FokhaUtf8(text, data);
      ok = ok && FileWriteArray(h, data, 0, dn) == (uint)dn;
     }
   FileFlush(h);
   FileClose(h);
   if(ok && FileMove(tmp, m_common, m_journal, FILE_REWRITE | m_common))
     {
      m_journal_lines = lines;
      m_journal_lf = false;
      return;
     }
   PrintFormat("fokha: journal compaction deferred (error %d); the old journal stays", GetLastError());
   FileDelete(tmp, m_common);
   m_journal_lines = 2 * m_state.Count();   // try again after another 1000 records
  }

bool CFokhaBridge::JournalEffect(const string id, const string evidence_json)
  {
   if(!FokhaValidId(id) || !FokhaIsJsonObject(evidence_json) || StringFind(evidence_json, "\n") >= 0)
      return false;
   long at = (long)TimeGMT();
   if(!AppendJournal("E " + IntegerToString(at) + " " + id + " " + FokhaCrcHex(id + " " + evidence_json) +
                     " " + evidence_json))
      return false;
   FokhaPut(m_effect, id, evidence_json);
   FokhaPut(m_at, id, at);
   CFokhaJsonObject ev;
   double order = 0;
   if(ev.ParseText(evidence_json) && ev.GetNumber("order", order) && order > 0)
      FokhaPut(m_claimed, IntegerToString((long)order), id);
   return true;
  }

bool CFokhaBridge::EffectOf(const string id, string &evidence_json)
  {
   return m_effect.TryGetValue(id, evidence_json);
  }

// whether another id's evidence names this order ticket
bool CFokhaBridge::TicketClaimed(const ulong ticket, const string by_id)
  {
   string owner;
   return m_claimed.TryGetValue(IntegerToString((long)ticket), owner) && owner != by_id;
  }

int CFokhaBridge::List(const string folder, string &names[])
  {
   ArrayResize(names, 0);
   string found;
   long h = FileFindFirst(folder + "\\*.fkb", found, m_common);
   if(h == INVALID_HANDLE)
      return 0;
   int n = 0;
   do
     {
      string seq, sender, id;
      // the mask matches short 8.3 names too ("x.fkbak"): check the full name
      if(FokhaParseName(found, seq, sender, id))
        {
         ArrayResize(names, n + 1, 64);
         names[n++] = found;
        }
     }
   while(FileFindNext(h, found));
   FileFindClose(h);
   FokhaSortStrings(names);
   return n;
  }

//--- section 6.1 step 4: publish complete frames left in tmp\, delete the rest; the seq
//--- restarts above every seq of ours still visible (tmp\, new\, snap\) and the S record
void CFokhaBridge::RecoverTmp(void)
  {
   string names[];
   int n = List(m_out + "\\tmp", names);
   for(int i = 0; i < n; i++)
     {
      string seq, sender, id;
      FokhaParseName(names[i], seq, sender, id);
      if(sender != m_local)
         continue;
      NoteOwnSeq(seq);
      uchar buf[];
      long size = 0;
      string path = Path(m_out, "tmp", names[i]);
      string fid, fseq, code;
      CFokhaJsonObject obj;
      if(ReadFrame(path, buf, size) == FOKHA_CHECK_OK &&
         CheckFrame(buf, (int)size, fid, fseq, obj, code) == FOKHA_CHECK_OK)
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
         int len = StringLen(found);
         if(len > 5 && StringSubstr(found, len - 5) == ".snap" &&
            StringFind(found, "." + m_local + ".snap") == len - 6 - StringLen(m_local))
            FileDelete(Path(m_out, "tmp", found), m_common);
        }
      while(FileFindNext(h, found));
      FileFindClose(h);
     }
   string mine[];
   n = List(m_out + "\\new", mine);
   for(int i = 0; i < n; i++)
     {
      string seq, sender, id;
      FokhaParseName(mine[i], seq, sender, id);
      if(sender == m_local)
         NoteOwnSeq(seq);
     }
   h = FileFindFirst(m_out + "\\snap\\*.fkb", found, m_common);
   if(h != INVALID_HANDLE)
     {
      do
        {
         int len = StringLen(found);
         int dot = StringFind(found, ".");
         if(dot > 0 && len == dot + 1 + 20 + 4)
            NoteOwnSeq(StringSubstr(found, dot + 1, 20));
        }
      while(FileFindNext(h, found));
      FileFindClose(h);
     }
  }

//--- section 6.2 step 1: leftovers in cur\ are processed, never wiped. A file that cannot
//--- be opened now (locked) stays and is looked at again.
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
      long size = 0;
      string id, seq, code;
      CFokhaJsonObject obj;
      int r = ReadFrame(path, buf, size);
      if(r == FOKHA_CHECK_LOCKED)
        {
         m_recheck_cur = true;
         continue;
        }
      if(r == FOKHA_CHECK_OK)
         r = CheckFrame(buf, (int)size, id, seq, obj, code);
      else
         code = "too_large";
      if(r != FOKHA_CHECK_OK)
        {
         if(!ToBad("cur", names[i], r == FOKHA_CHECK_INCOMPLETE ? "incomplete" : code, "found in cur at start-up"))
            m_recheck_cur = true;
         continue;
        }
      if(!Process(names[i], id, seq, obj))
         m_recheck_cur = true;
     }
  }

//--- the grace rule (4.1): size and modification time unchanged for m_grace_ms
void CFokhaBridge::NotReady(const string name, const string path, const string code)
  {
   long size = FileGetInteger(path, FILE_SIZE, m_common != 0);
   long mtime = FileGetInteger(path, FILE_MODIFY_DATE, m_common != 0);
   long now = (long)GetTickCount64();
   long seen_size, seen_mtime, seen_at;
   if(!m_seen_size.TryGetValue(name, seen_size) || !m_seen_mtime.TryGetValue(name, seen_mtime) ||
      seen_size != size || seen_mtime != mtime || !m_seen_at.TryGetValue(name, seen_at))
     {
      FokhaPut(m_seen_size, name, size);
      FokhaPut(m_seen_mtime, name, mtime);
      FokhaPut(m_seen_at, name, now);
      FokhaPut(m_seen_code, name, code);
      return;
     }
   if(now - seen_at >= (long)m_grace_ms && ToBad("new", name, code, "unchanged past the grace period"))
      Forget(name);
  }

void CFokhaBridge::Forget(const string name)
  {
   m_seen_size.Remove(name);
   m_seen_mtime.Remove(name);
   m_seen_at.Remove(name);
   m_seen_code.Remove(name);
  }

//--- section 6.2 steps 2-3
void CFokhaBridge::Poll(void)
  {
   string names[];
   int n = List(m_in + "\\new", names);
   for(int i = 0; i < n; i++)
     {
      string path = Path(m_in, "new", names[i]);
      long seen_size, seen_mtime;
      if(m_seen_size.TryGetValue(names[i], seen_size) && m_seen_mtime.TryGetValue(names[i], seen_mtime) &&
         FileGetInteger(path, FILE_SIZE, m_common != 0) == seen_size &&
         FileGetInteger(path, FILE_MODIFY_DATE, m_common != 0) == seen_mtime)
        {
         // unchanged since it was found not ready: no need to read it again
         string why = "incomplete";
         m_seen_code.TryGetValue(names[i], why);
         NotReady(names[i], path, why);
         continue;
        }
      uchar buf[];
      long size = 0;
      int r = ReadFrame(path, buf, size);
      if(r == FOKHA_CHECK_LOCKED)
         continue;   // vanished or in use: next pass
      string id, seq, code = "too_large";
      CFokhaJsonObject obj;
      if(r == FOKHA_CHECK_OK)
         r = CheckFrame(buf, (int)size, id, seq, obj, code);
      if(r != FOKHA_CHECK_OK)
        {
         NotReady(names[i], path, code);
         continue;
        }
      Forget(names[i]);
      // claim: new\ -> cur\ (no FILE_REWRITE: reconciliation removed stale copies)
      if(!FileMove(path, m_common, Path(m_in, "cur", names[i]), m_common))
         continue;
      if(!Process(names[i], id, seq, obj))
         m_recheck_cur = true;
     }
   // forget not-ready files that are gone (bounded memory)
   if(m_seen_at.Count() > 0)
     {
      string keys[];
      long vals[];
      m_seen_at.CopyTo(keys, vals);
      for(int k = 0; k < ArraySize(keys); k++)
         if(!FokhaSortedHas(names, keys[k]))
            Forget(keys[k]);
     }
  }

//--- section 6.2 steps 4-7; false when the file stays in cur\ to be looked at again
bool CFokhaBridge::Process(const string name, const string id, const string seq, CFokhaJsonObject &obj)
  {
   string nseq, nsender, nid;
   FokhaParseName(name, nseq, nsender, nid);
   // section 5, in the spec's order
   if(nid != id || FokhaSeqNorm(nseq) != FokhaSeqNorm(seq))
      return ToBad("cur", name, "name_mismatch", "header id/seq differ from the file name");
   FokhaMessage msg;
   msg.name = name;
   msg.id = id;
   msg.seq = seq;
   msg.redelivered = false;
   msg.sent_at = 0;
   msg.details = "{}";
   if(!obj.GetString("type", msg.type) || (msg.type != "message" && msg.type != "request" && msg.type != "reply"))
      return ToBad("cur", name, "bad_message", "type");
   if(!obj.GetString("kind", msg.kind) || !FokhaValidKind(msg.kind))
      return ToBad("cur", name, "bad_message", "kind");
   if(!obj.GetString("sender", msg.sender) || !FokhaValidSender(msg.sender))
      return ToBad("cur", name, "bad_message", "sender");
   if(msg.sender != nsender)
      return ToBad("cur", name, "name_mismatch", "sender differs from the file name");
   if(!obj.GetNumber("sent_at", msg.sent_at))
      return ToBad("cur", name, "bad_message", "sent_at");
   if(!obj.GetObject("body", msg.body))
      return ToBad("cur", name, "bad_message", "body");
   if(msg.type == "reply")
     {
      if(!obj.GetString("in_reply_to", msg.in_reply_to) || !FokhaValidId(msg.in_reply_to))
         return ToBad("cur", name, "bad_message", "in_reply_to");
      if(!obj.GetString("status", msg.status) || (msg.status != "accepted" && msg.status != "executed" &&
            msg.status != "rejected" && msg.status != "failed"))
         return ToBad("cur", name, "bad_message", "status");
      if(obj.Has("details") && !obj.GetObject("details", msg.details))
         return ToBad("cur", name, "bad_message", "details");
     }
   string state;
   bool known = m_state.TryGetValue(id, state);
   if(known && state == "D")
     {
      // a duplicate (resend, or crash before the ack): answer again with the stored reply
      string rid, reply;
      if(m_reply_id.TryGetValue(id, rid) && rid != "-" && m_reply.TryGetValue(id, reply) &&
         !SendReply(rid, reply))
         return false;
      return FileDelete(Path(m_in, "cur", name), m_common);
     }
   if(known)
     {
      // in doubt ("B" without "D"): the handler must see the trade server as it is
      if(!TradeServerReady())
         return false;
      msg.redelivered = true;
     }
   else
     {
      long at = (long)TimeGMT();
      if(!AppendJournal("B " + IntegerToString(at) + " " + id))
        {
         PrintFormat("fokha: journal append failed for %s (error %d): not handled, retried", id, GetLastError());
         return false;
        }
      m_state.Add(id, "B");
      FokhaPut(m_at, id, at);
     }
   string status = "failed", details = "{}";
   bool handled = OnMessage(msg, status, details);
   if(!handled)
     {
      PrintFormat("fokha: handler error on %s (%s)", id, msg.kind);
      if(msg.type != "request")
         return ToBad("cur", name, "handler_error", "OnMessage returned false");   // no D record (6.2)
      status = "failed";
      details = "{\"message\":\"handler error\"}";
     }
   if(status != "accepted" && status != "executed" && status != "rejected" && status != "failed")
     {
      details = "{\"message\":" + FokhaJsonQuote("handler gave status " + status) + "}";
      status = "failed";
     }
   if(!FokhaIsJsonObject(details))
      details = "{\"message\":\"handler gave details that are not a JSON object\"}";
   string rid = "-", reply = "-";
   if(msg.type == "request")
     {
      rid = "R" + IntegerToString(NextSeq());   // unique per EA across restarts
      reply = "{\"body\":{},\"details\":" + details + ",\"in_reply_to\":" + FokhaJsonQuote(id) +
              ",\"kind\":" + FokhaJsonQuote(msg.kind) + ",\"sender\":" + FokhaJsonQuote(m_local) +
              ",\"sent_at\":" + IntegerToString((long)TimeGMT()) + ",\"status\":" +
              FokhaJsonQuote(status) + ",\"type\":\"reply\"}";
     }
   long at = (long)TimeGMT();
   if(!AppendJournal("D " + IntegerToString(at) + " " + id + " " + rid + " " +
                     FokhaCrcHex(id + " " + rid + " " + reply) + " " + reply))
     {
      PrintFormat("fokha: journal append failed for %s (error %d): reply held, retried as in doubt",
                  id, GetLastError());
      return false;
     }
   FokhaPut(m_state, id, "D");
   FokhaPut(m_reply_id, id, rid);
   FokhaPut(m_reply, id, reply);
   FokhaPut(m_at, id, at);
   if(rid != "-" && !SendReply(rid, reply))
      return false;   // the journal says done: the next look re-sends the stored reply
   return FileDelete(Path(m_in, "cur", name), m_common);   // acknowledge
  }

bool CFokhaBridge::SendReply(const string reply_id, const string payload)
  {
   long seq = NextSeq();
   string name = IntegerToString(seq, 20, '0') + "-" + m_local + "-" + reply_id + ".fkb";
   uchar frame[];
   if(!BuildFrame(reply_id, seq, payload, frame))
      return false;
   return Publish(name, frame);
  }

bool CFokhaBridge::SendMessage(const string kind, const string body_json, string id)
  {
   long seq = NextSeq();
   if(id == "")
      id = "M" + IntegerToString(seq);
   if(!FokhaValidId(id) || !FokhaValidKind(kind) || !FokhaIsJsonObject(body_json))
      return false;
   string payload = "{\"body\":" + body_json + ",\"kind\":" + FokhaJsonQuote(kind) + ",\"sender\":" +
                    FokhaJsonQuote(m_local) + ",\"sent_at\":" + IntegerToString((long)TimeGMT()) +
                    ",\"type\":\"message\"}";
   uchar frame[];
   if(!BuildFrame(id, seq, payload, frame))
      return false;
   return Publish(IntegerToString(seq, 20, '0') + "-" + m_local + "-" + id + ".fkb", frame);
  }

//--- section 7: write tmp\<name>.<seq>.<sender>.snap, move to snap\<name>.<seq20>.fkb, keep two
bool CFokhaBridge::WriteSnapshot(const string name, const string body_json)
  {
   if(!FokhaValidToken(name, 32, false, false) || name != FokhaLower(name) || !FokhaIsJsonObject(body_json))
      return false;   // section 3: snapshot names are [a-z0-9_]{1,32}
   long seq = NextSeq();
   string s20 = IntegerToString(seq, 20, '0');
   string payload = "{\"body\":" + body_json + ",\"kind\":" + FokhaJsonQuote(name) + ",\"sender\":" +
                    FokhaJsonQuote(m_local) + ",\"sent_at\":" + IntegerToString((long)TimeGMT()) +
                    ",\"type\":\"snapshot\"}";
   uchar frame[];
   if(!BuildFrame(name + "-" + IntegerToString(seq), seq, payload, frame))
      return false;
   string tmp = Path(m_out, "tmp", name + "." + s20 + "." + m_local + ".snap");
   if(!WriteBytes(tmp, frame))
      return false;
   if(!FileMove(tmp, m_common, Path(m_out, "snap", name + "." + s20 + ".fkb"), m_common))
     {
      FileDelete(tmp, m_common);   // the next snapshot replaces it
      return false;
     }
   string versions[];
   string found;
   int n = 0;
   long h = FileFindFirst(m_out + "\\snap\\" + name + ".*.fkb", found, m_common);
   if(h != INVALID_HANDLE)
     {
      do
        {
         if(StringLen(found) == StringLen(name) + 1 + 20 + 4 && StringFind(found, name + ".") == 0 &&
            StringSubstr(found, StringLen(found) - 4) == ".fkb")
           {
            ArrayResize(versions, n + 1, 8);
            versions[n++] = found;
           }
        }
      while(FileFindNext(h, found));
      FileFindClose(h);
     }
   FokhaSortStrings(versions);   // same length, 20 digits: byte order is seq order
   for(int i = 0; i < n - 2; i++)
      FileDelete(Path(m_out, "snap", versions[i]), m_common);
   return true;
  }

//--- section 4.2: bad\<name> and bad\<name>.reason.json, one log line. false (and nothing
//--- written) when the move fails: the caller leaves the file and looks again later.
//--- FILE_REWRITE: a name already in bad\ is an older copy of the same file.
bool CFokhaBridge::ToBad(const string sub, const string name, const string code, const string detail)
  {
   if(!FileMove(Path(m_in, sub, name), m_common, Path(m_in, "bad", name), FILE_REWRITE | m_common))
     {
      PrintFormat("fokha: cannot move %s to bad (%s, error %d): retried", name, code, GetLastError());
      return false;
     }
   uchar data[];
   FokhaUtf8("{\"at\":" + IntegerToString((long)TimeGMT()) + ",\"code\":" + FokhaJsonQuote(code) +
             ",\"detail\":" + FokhaJsonQuote(detail) + ",\"reader\":" + FokhaJsonQuote(m_local) + "}", data);
   if(!WriteBytes(Path(m_in, "bad", name + ".reason.json"), data))
      PrintFormat("fokha: cannot write the reason file of %s (error %d)", name, GetLastError());
   PrintFormat("fokha: moved %s to bad (%s)", name, code);
   return true;
  }
//+------------------------------------------------------------------+
