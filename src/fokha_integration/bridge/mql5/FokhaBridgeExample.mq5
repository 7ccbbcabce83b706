//+------------------------------------------------------------------+
//| FokhaBridgeExample.mq5                                           |
//| Example EA for the fokha-integration file bridge (protocol v1).  |
//|                                                                  |
//| Executes "order" and "close" requests from Python, answers       |
//| "ping", publishes "positions" and "account" snapshots and a      |
//| heartbeat.                                                       |
//|                                                                  |
//| Install: copy FokhaBridge.mqh to MQL5\Include\ and this file to  |
//| MQL5\Experts\, compile in MetaEditor, attach to a chart with     |
//| algo trading enabled. Python side:                               |
//|   FileBridge("<data folder>/MQL5/Files/fokha")                   |
//| (or Common/Files/fokha with InpCommon = true).                   |
//|                                                                  |
//| Exactly once, without trusting order comments: before an order  |
//| is sent, its tag and parameters go into the journal (an E        |
//| record); after it, the order, deal and position tickets do. A    |
//| redelivered request (the EA died while handling it) answers from |
//| that record, or looks the tag up among this EA's orders and      |
//| deals (magic number + tag), and only sends again when the trade  |
//| server, connected and with its history loaded, has neither.      |
//|                                                                  |
//| NOTE: not compiled here (no MQL5 compiler was available); see    |
//| docs/file-bridge.md, "First run on a real terminal".             |
//+------------------------------------------------------------------+
#property strict
#property description "fokha-integration file bridge example EA"

#include <Trade\Trade.mqh>
#include <FokhaBridge.mqh>

input string InpRoot    = "fokha";   // bridge folder inside MQL5\Files (or Common\Files)
input bool   InpCommon  = false;     // use Common\Files (FILE_COMMON)
input int    InpTimerMs = 20;        // timer period; the terminal's floor is about 10-16 ms
input ulong  InpMagic   = 20261123;  // magic number of the orders this EA places (one per EA)

CTrade g_trade;

//--- the bridge with this EA's message handler
class CExampleBridge : public CFokhaBridge
  {
public:
   virtual bool OnMessage(FokhaMessage &msg, string &status, string &details_json)
     {
      if(msg.kind == "ping")
        {
         status = "executed";
         details_json = "{\"message\":\"pong\"}";
         return true;
        }
      if(msg.kind == "order")
         return Order(msg, status, details_json);
      if(msg.kind == "close")
         return Close(msg, status, details_json);
      status = "rejected";
      details_json = "{\"message\":" + FokhaJsonQuote("unknown kind " + msg.kind) + "}";
      return true;
     }

   //--- one market order, exactly once per request id
   bool Order(FokhaMessage &msg, string &status, string &details_json)
     {
      CFokhaJsonObject body;
      string symbol, direction;
      double volume = 0, sl = 0, tp = 0;
      if(!body.ParseText(msg.body) || !body.GetString("symbol", symbol) || !body.GetString("direction", direction) ||
         !body.GetNumber("volume", volume) || symbol == "" || volume <= 0 ||
         (direction != "BUY" && direction != "SELL"))
        {
         status = "rejected";
         details_json = "{\"retcode\":10013,\"message\":\"invalid order\"}";
         return true;
        }
      body.GetNumber("stop_loss", sl);
      body.GetNumber("take_profit", tp);
      string evidence;
      string tag = "";
      if(EffectOf(msg.id, evidence))
        {
         CFokhaJsonObject ev;
         string stage;
         ev.ParseText(evidence);
         ev.GetString("tag", tag);
         if(ev.GetString("stage", stage) && stage == "done")
           {
            // the order went out and its result was recorded: answer from the record
            string recorded;
            ev.GetString("status", status);
            ev.GetObject("details", recorded);
            details_json = recorded;
            return true;
           }
         // "sending": the EA died between the intent record and the result record
         ulong order = 0, deal = 0, position = 0;
         if(FindByTag(tag, msg.id, symbol, direction, volume, (long)ev_at(ev), order, deal, position))
           {
            details_json = Details(order, deal, position, TRADE_RETCODE_DONE, "found after restart");
            status = "executed";
            Record(msg.id, tag, status, details_json, order);
            return true;
           }
         PrintFormat("fokha example: %s (tag %s) not on the trade server: sending it now", msg.id, tag);
        }
      else
        {
         tag = NewTag();   // unique per EA: the order comment, 31 characters at most
         string intent = "{\"at\":" + IntegerToString((long)TimeGMT()) + ",\"stage\":\"sending\",\"tag\":" +
                         FokhaJsonQuote(tag) + "}";
         if(!JournalEffect(msg.id, intent))
           {
            status = "failed";
            details_json = "{\"message\":\"journal not writable: order not sent\"}";
            return true;
           }
        }
      bool ok = (direction == "BUY") ? g_trade.Buy(volume, symbol, 0.0, sl, tp, tag)
                                     : g_trade.Sell(volume, symbol, 0.0, sl, tp, tag);
      uint retcode = g_trade.ResultRetcode();
      ulong order = g_trade.ResultOrder();
      ulong deal = g_trade.ResultDeal();
      ulong position = 0;
      if(deal != 0 && HistoryDealSelect(deal))
         position = (ulong)HistoryDealGetInteger(deal, DEAL_POSITION_ID);   // netting: the symbol's position
      status = (ok && (retcode == TRADE_RETCODE_DONE || retcode == TRADE_RETCODE_PLACED ||
                       retcode == TRADE_RETCODE_DONE_PARTIAL)) ? "executed" : "failed";
      details_json = Details(order, deal, position, retcode, g_trade.ResultRetcodeDescription());
      // a failed result record is not fatal: a redelivery finds the order by its tag
      Record(msg.id, tag, status, details_json, order);
      PublishState();
      return true;
     }

   double ev_at(CFokhaJsonObject &ev)
     {
      double at = 0;
      ev.GetNumber("at", at);
      return at;
     }

   string Details(const ulong order, const ulong deal, const ulong position, const uint retcode, const string text)
     {
      // "ticket" is the order ticket (as CTrade reports it); "position" is the position id,
      // which on a netting account is the symbol's one position, not this order
      return "{\"deal\":" + IntegerToString((long)deal) + ",\"message\":" + FokhaJsonQuote(text) +
             ",\"order\":" + IntegerToString((long)order) + ",\"position\":" + IntegerToString((long)position) +
             ",\"retcode\":" + IntegerToString(retcode) + ",\"ticket\":" + IntegerToString((long)order) + "}";
     }

   void Record(const string id, const string tag, const string status, const string details, const ulong order)
     {
      string done = "{\"details\":" + details + ",\"order\":" + IntegerToString((long)order) +
                    ",\"stage\":\"done\",\"status\":" + FokhaJsonQuote(status) + ",\"tag\":" + FokhaJsonQuote(tag) + "}";
      if(!JournalEffect(id, done))
         PrintFormat("fokha example: result of %s not journaled (error %d); a redelivery looks the tag up",
                     id, GetLastError());
     }

   //--- this EA's order with this tag: active orders, history orders and deals (magic + tag).
   //--- A broker that rewrites comments defeats the tag; then a deal of this magic, symbol,
   //--- direction and volume made after the intent record, that no other id claims, is taken.
   bool FindByTag(const string tag, const string id, const string symbol, const string direction,
                  const double volume, const long since, ulong &order, ulong &deal, ulong &position)
     {
      order = 0;
      deal = 0;
      position = 0;
      for(int i = OrdersTotal() - 1; i >= 0; i--)
        {
         ulong t = OrderGetTicket(i);
         if(t != 0 && (ulong)OrderGetInteger(ORDER_MAGIC) == InpMagic && OrderGetString(ORDER_COMMENT) == tag)
           {
            order = t;
            return true;
           }
        }
      if(!HistorySelect((datetime)(since - 60), TimeCurrent() + 86400))
         return false;
      for(int i = HistoryDealsTotal() - 1; i >= 0; i--)
        {
         ulong d = HistoryDealGetTicket(i);
         if(d == 0 || (ulong)HistoryDealGetInteger(d, DEAL_MAGIC) != InpMagic)
            continue;
         if(HistoryDealGetString(d, DEAL_COMMENT) == tag)
           {
            deal = d;
            order = (ulong)HistoryDealGetInteger(d, DEAL_ORDER);
            position = (ulong)HistoryDealGetInteger(d, DEAL_POSITION_ID);
            return true;
           }
        }
      for(int i = HistoryOrdersTotal() - 1; i >= 0; i--)
        {
         ulong t = HistoryOrderGetTicket(i);
         if(t != 0 && (ulong)HistoryOrderGetInteger(t, ORDER_MAGIC) == InpMagic &&
            HistoryOrderGetString(t, ORDER_COMMENT) == tag)
           {
            order = t;
            return true;
           }
        }
      long want_type = (direction == "BUY") ? DEAL_TYPE_BUY : DEAL_TYPE_SELL;
      for(int i = HistoryDealsTotal() - 1; i >= 0; i--)
        {
         ulong d = HistoryDealGetTicket(i);
         if(d == 0 || (ulong)HistoryDealGetInteger(d, DEAL_MAGIC) != InpMagic ||
            HistoryDealGetInteger(d, DEAL_TIME) < since || HistoryDealGetString(d, DEAL_SYMBOL) != symbol ||
            HistoryDealGetInteger(d, DEAL_TYPE) != want_type ||
            MathAbs(HistoryDealGetDouble(d, DEAL_VOLUME) - volume) > 1e-8 ||
            TicketClaimed((ulong)HistoryDealGetInteger(d, DEAL_ORDER), id))
            continue;
         deal = d;
         order = (ulong)HistoryDealGetInteger(d, DEAL_ORDER);
         position = (ulong)HistoryDealGetInteger(d, DEAL_POSITION_ID);
         PrintFormat("fokha example: %s matched deal %I64u without its tag (comment rewritten?)", id, d);
         return true;
        }
      return false;
     }

   //--- close a position of this EA by position ticket; closing twice is "executed" once
   bool Close(FokhaMessage &msg, string &status, string &details_json)
     {
      CFokhaJsonObject body;
      double ticket = 0;
      if(!body.ParseText(msg.body) || !body.GetNumber("position", ticket) || ticket <= 0)
        {
         status = "rejected";
         details_json = "{\"retcode\":10013,\"message\":\"close needs a position ticket\"}";
         return true;
        }
      string evidence;
      if(EffectOf(msg.id, evidence))
        {
         CFokhaJsonObject ev;
         string stage, recorded;
         if(ev.ParseText(evidence) && ev.GetString("stage", stage) && stage == "done")
           {
            ev.GetString("status", status);
            ev.GetObject("details", recorded);
            details_json = recorded;
            return true;
           }
        }
      ulong position = (ulong)ticket;
      if(!PositionSelectByTicket(position) || (ulong)PositionGetInteger(POSITION_MAGIC) != InpMagic)
        {
         // gone (closed before a crash, or never ours): nothing to do, said plainly
         status = msg.redelivered ? "executed" : "rejected";
         details_json = "{\"message\":\"no open position of this EA with that ticket\",\"position\":" +
                        IntegerToString((long)position) + "}";
         return true;
        }
      if(!JournalEffect(msg.id, "{\"stage\":\"sending\",\"position\":" + IntegerToString((long)position) + "}"))
        {
         status = "failed";
         details_json = "{\"message\":\"journal not writable: not closed\"}";
         return true;
        }
      bool ok = g_trade.PositionClose(position);
      uint retcode = g_trade.ResultRetcode();
      status = (ok && (retcode == TRADE_RETCODE_DONE || retcode == TRADE_RETCODE_PLACED)) ? "executed" : "failed";
      details_json = Details(g_trade.ResultOrder(), g_trade.ResultDeal(), position, retcode,
                             g_trade.ResultRetcodeDescription());
      Record(msg.id, "", status, details_json, g_trade.ResultOrder());
      PublishState();
      return true;
     }

   void PublishState()
     {
      string items = "";
      for(int i = 0; i < PositionsTotal(); i++)
        {
         ulong ticket = PositionGetTicket(i);
         if(ticket == 0)
            continue;
         if(items != "")
            items += ",";
         items += "{\"comment\":" + FokhaJsonQuote(PositionGetString(POSITION_COMMENT)) +
                  ",\"magic\":" + IntegerToString(PositionGetInteger(POSITION_MAGIC)) +
                  ",\"position\":" + IntegerToString((long)ticket) +
                  ",\"profit\":" + DoubleToString(PositionGetDouble(POSITION_PROFIT), 2) +
                  ",\"symbol\":" + FokhaJsonQuote(PositionGetString(POSITION_SYMBOL)) +
                  ",\"volume\":" + DoubleToString(PositionGetDouble(POSITION_VOLUME), 2) + "}";
        }
      WriteSnapshot("positions", "{\"positions\":[" + items + "]}");
      WriteSnapshot("account", "{\"balance\":" + DoubleToString(AccountInfoDouble(ACCOUNT_BALANCE), 2) +
                    ",\"equity\":" + DoubleToString(AccountInfoDouble(ACCOUNT_EQUITY), 2) +
                    ",\"positions\":" + IntegerToString(PositionsTotal()) + "}");
     }
  };

CExampleBridge g_bridge;

int OnInit()
  {
   g_trade.SetExpertMagicNumber(InpMagic);
   if(!g_bridge.Init(InpRoot, InpCommon))
      return INIT_FAILED;
   g_bridge.PublishState();
   EventSetMillisecondTimer(InpTimerMs);
   return INIT_SUCCEEDED;
  }

void OnDeinit(const int reason)
  {
   EventKillTimer();
  }

void OnTimer()
  {
   g_bridge.OnTimer();
  }
//+------------------------------------------------------------------+
