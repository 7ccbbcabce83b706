//+------------------------------------------------------------------+
//| FokhaBridgeExample.mq5                                           |
//| Example EA for the fokha-integration file bridge (protocol v1).  |
//|                                                                  |
//| Executes "order" requests from Python, answers "ping", publishes |
//| "positions" and "account" snapshots and a heartbeat.            |
//|                                                                  |
//| Install: copy FokhaBridge.mqh to MQL5\Include\ and this file to  |
//| MQL5\Experts\, compile in MetaEditor, attach to a chart with     |
//| algo trading enabled. Python side:                               |
//|   FileBridge("<data folder>/MQL5/Files/fokha")                   |
//| (or Common/Files/fokha with InpCommon = true).                   |
//|                                                                  |
//| NOTE: not compiled here (no MQL5 compiler was available); the   |
//| protocol is tested against an emulator of this EA in Python.    |
//+------------------------------------------------------------------+
#property strict
#property description "fokha-integration file bridge example EA"

#include <Trade\Trade.mqh>
#include <FokhaBridge.mqh>

input string InpRoot   = "fokha";   // bridge folder inside MQL5\Files (or Common\Files)
input bool   InpCommon = false;     // use Common\Files (FILE_COMMON)
input int    InpTimerMs = 20;       // timer period; the terminal's floor is about 10-16 ms
input ulong  InpMagic  = 20261123;  // magic number of the orders this EA places

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
      if(msg.kind != "order")
        {
         status = "rejected";
         details_json = "{\"message\":" + FokhaJsonQuote("unknown kind " + msg.kind) + "}";
         return true;
        }
      //--- a redelivered request may have been executed before the crash: look for it
      if(msg.redelivered)
        {
         ulong found = FindByComment(msg.id);
         if(found != 0)
           {
            status = "executed";
            details_json = "{\"ticket\":" + IntegerToString((long)found) + ",\"retcode\":10009,\"message\":\"found after restart\"}";
            return true;
           }
        }
      string symbol = FokhaJsonUnquote(FokhaJsonGet(msg.body, "symbol"));
      string direction = FokhaJsonUnquote(FokhaJsonGet(msg.body, "direction"));
      double volume = StringToDouble(FokhaJsonGet(msg.body, "volume"));
      double sl = StringToDouble(FokhaJsonGet(msg.body, "stop_loss"));
      double tp = StringToDouble(FokhaJsonGet(msg.body, "take_profit"));
      if(symbol == "" || volume <= 0 || (direction != "BUY" && direction != "SELL"))
        {
         status = "rejected";
         details_json = "{\"retcode\":10013,\"message\":\"invalid order\"}";
         return true;
        }
      //--- the request id goes into the comment: that is how a restart finds it (31 chars max)
      string comment = StringSubstr(msg.id, 0, 31);
      bool ok = (direction == "BUY") ? g_trade.Buy(volume, symbol, 0.0, sl, tp, comment)
                                     : g_trade.Sell(volume, symbol, 0.0, sl, tp, comment);
      uint retcode = g_trade.ResultRetcode();
      ulong ticket = g_trade.ResultOrder();
      status = (ok && (retcode == TRADE_RETCODE_DONE || retcode == TRADE_RETCODE_PLACED)) ? "executed" : "failed";
      details_json = "{\"ticket\":" + IntegerToString((long)ticket) + ",\"retcode\":" + IntegerToString(retcode) +
                     ",\"message\":" + FokhaJsonQuote(g_trade.ResultRetcodeDescription()) + "}";
      PublishState();
      return true;
     }

   //--- an open position or a deal of the last 7 days whose comment is the request id
   ulong FindByComment(const string id)
     {
      string comment = StringSubstr(id, 0, 31);
      for(int i = PositionsTotal() - 1; i >= 0; i--)
        {
         ulong ticket = PositionGetTicket(i);
         if(ticket != 0 && PositionGetString(POSITION_COMMENT) == comment)
            return ticket;
        }
      if(HistorySelect(TimeCurrent() - 7 * 86400, TimeCurrent() + 60))
        {
         for(int i = HistoryDealsTotal() - 1; i >= 0; i--)
           {
            ulong deal = HistoryDealGetTicket(i);
            if(deal != 0 && HistoryDealGetString(deal, DEAL_COMMENT) == comment)
               return (ulong)HistoryDealGetInteger(deal, DEAL_ORDER);
           }
        }
      return 0;
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
         items += "{\"ticket\":" + IntegerToString((long)ticket) +
                  ",\"symbol\":" + FokhaJsonQuote(PositionGetString(POSITION_SYMBOL)) +
                  ",\"volume\":" + DoubleToString(PositionGetDouble(POSITION_VOLUME), 2) +
                  ",\"profit\":" + DoubleToString(PositionGetDouble(POSITION_PROFIT), 2) +
                  ",\"comment\":" + FokhaJsonQuote(PositionGetString(POSITION_COMMENT)) + "}";
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
